"""Associations for sending (SCU), with pynetdicom's reactor race closed.

pynetdicom runs a reactor thread per association that takes any DIMSE message
off the queue and, on a requestor, drops a response it did not ask for
("Received unexpected C-STORE service message").  ``send_c_store`` and the other
``send_*`` methods pause it first: they clear ``_reactor_checkpoint`` and wait
for ``_is_paused``.  But the reactor sets ``_is_paused`` *before* it waits on the
checkpoint and clears it only after, so a sender that clears the checkpoint just
after the reactor passed it sees a stale ``_is_paused`` and sends; if the
reactor then loses the CPU for a moment, it wakes up to the response and drops
it.  The sender waits out its DIMSE timeout and aborts the association, or the
peer's network timeout (which counts from the last PDU it received) aborts it
first.  On a busy machine this happens (pynetdicom 3.0.4, the newest; the same
family as pydicom/pynetdicom#875): our result deliveries then wait a DIMSE
timeout and go again later, and the reliability tests' senders failed.

No public setting avoids it, so `associate` swaps the association's checkpoint
for a `ParkingCheckpoint`, whose ``clear()`` returns only once the reactor
thread is parked in ``wait()``.  Every ``send_*`` then finds the reactor stopped
before its request leaves.  This touches one private attribute of
pynetdicom, in this one place; tests/service/test_scu.py checks both the
interleaving and pynetdicom's use of the attribute.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from pynetdicom import AE
from pynetdicom.association import Association

#: How long ``clear()`` waits for the reactor to park before it gives up and
#: leaves the sender to pynetdicom's own check (a reactor that neither parks nor
#: exits within this time is stuck elsewhere; the association is lost anyway).
PARK_TIMEOUT_S = 30.0


class ParkingCheckpoint:
    """A stand-in for the reactor's ``threading.Event`` checkpoint.

    ``set``/``wait``/``is_set`` behave as the event's; ``clear`` (called by the
    sending thread) also waits until ``reactor`` is parked in ``wait`` or has
    ended, or until someone sets the checkpoint again (pynetdicom's ``abort`` and
    ``kill`` do, to let the reactor exit).
    """

    def __init__(self, reactor: threading.Thread, park_timeout: float = PARK_TIMEOUT_S) -> None:
        self._reactor = reactor
        self._park_timeout = park_timeout
        self._cond = threading.Condition()
        self._open = True
        self._parked = False

    def is_set(self) -> bool:
        return self._open

    def set(self) -> None:
        with self._cond:
            self._open = True
            self._cond.notify_all()

    def wait(self, timeout: float | None = None) -> bool:
        with self._cond:
            if self._open:
                return True
            self._parked = True
            self._cond.notify_all()
            try:
                return self._cond.wait_for(lambda: self._open, timeout)
            finally:
                self._parked = False

    def clear(self) -> None:
        with self._cond:
            self._open = False
            if threading.current_thread() is self._reactor:
                return  # the reactor never waits for itself
            deadline = time.monotonic() + self._park_timeout
            # Polled as well as notified: a reactor thread that ends sends no notice.
            while not (self._parked or self._open or not self._reactor.is_alive()):
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._cond.wait(min(left, 0.05))


def close_reactor_race(assoc: Association) -> Association:
    """Give an established requestor association a `ParkingCheckpoint` (see the module doc)."""
    if assoc.is_established:
        assoc._reactor_checkpoint = ParkingCheckpoint(assoc)  # type: ignore[assignment]
    return assoc


def associate(ae: AE, addr: str, port: int, **kwargs: Any) -> Association:
    """``ae.associate(addr, port, **kwargs)`` with the reactor race closed."""
    return close_reactor_race(ae.associate(addr, port, **kwargs))
