"""service/scu.py: the reactor race of pynetdicom's requestor, forced, lost and closed.

The race needs the reactor thread to lose the CPU between its checkpoint's
``wait()`` returning and its ``_is_paused = False``.  These tests hold the
reactor there once, on purpose, so the interleaving is the same on every run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from service.scu import ParkingCheckpoint, associate, close_reactor_race
from tests.service.conftest import free_port

HOLD_S = 0.5  # how long the reactor is held in the unsafe window


class _Hold:
    """Holds the reactor once, just after a ``wait()`` that returned at once."""

    def __init__(self, reactor: threading.Thread) -> None:
        self.reactor = reactor
        self.held = threading.Event()
        self.release = threading.Event()
        self.armed = True

    def after_wait(self) -> None:
        if self.armed and threading.current_thread() is self.reactor:
            self.armed = False
            self.held.set()
            self.release.wait(10)


def _plain_event(reactor: threading.Thread) -> threading.Event:
    """pynetdicom's own checkpoint: a plain Event, set."""
    event = threading.Event()
    event.set()
    return event


def _held(checkpoint: Any, reactor: threading.Thread) -> _Hold:
    """Make ``checkpoint``'s ``wait`` hold ``reactor`` once (see `_Hold`); returns the hold."""
    hold = _Hold(reactor)
    inner = checkpoint.wait

    def wait(timeout: float | None = None) -> bool:
        result = bool(inner(timeout))
        hold.after_wait()
        return result

    checkpoint.wait = wait
    return hold


@pytest.fixture
def echo_port() -> Iterator[int]:
    ae = AE(ae_title="ECHO_SCP")
    ae.add_supported_context(Verification)
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False)
    assert server is not None
    yield port
    server.shutdown()


def _reactor_looks_first(assoc: Association, hold: _Hold) -> None:
    """When the response has landed while the reactor is still held, let the reactor
    look at the queue before the sender does (as when the sender's thread is slow
    to wake up on a busy machine)."""
    dimse = assoc.dimse
    real_get = dimse.get_msg
    reactor_looked = threading.Event()

    def get_msg(block: bool = False) -> Any:
        if threading.current_thread() is assoc:
            item = real_get(block)
            reactor_looked.set()
            return item
        deadline = time.monotonic() + 5
        while dimse.msg_queue.empty() and time.monotonic() < deadline:
            time.sleep(0.001)
        if not hold.release.is_set():
            reactor_looked.clear()
            hold.release.set()
            reactor_looked.wait(5)
        return real_get(block)

    dimse.get_msg = get_msg  # type: ignore[method-assign]


def _echo_through_a_held_reactor(
    port: int, checkpoint: Callable[[threading.Thread], Any]
) -> tuple[Association, int | None]:
    ae = AE(ae_title="SCU")
    ae.add_requested_context(Verification)
    ae.dimse_timeout = 2
    assoc = ae.associate("127.0.0.1", port, ae_title="ECHO_SCP")
    assert assoc.is_established
    cp = checkpoint(assoc)
    hold = _held(cp, assoc)
    assoc._reactor_checkpoint = cp
    assert hold.held.wait(5)  # the reactor sits between wait() and _is_paused = False
    _reactor_looks_first(assoc, hold)
    timer = threading.Timer(HOLD_S, hold.release.set)
    timer.start()
    try:
        status = getattr(assoc.send_c_echo(), "Status", None)
    finally:
        timer.join()
    return assoc, status


def test_pynetdicom_loses_the_response_to_its_own_reactor(echo_port: int) -> None:
    """The bug this module exists for (if pynetdicom fixes it, this fails: drop the fix)."""
    assoc, status = _echo_through_a_held_reactor(echo_port, _plain_event)
    assert status is None  # no response: taken and dropped by the reactor
    assert not assoc.is_established  # and the association aborted after the DIMSE timeout


def test_the_parking_checkpoint_keeps_the_response(echo_port: int) -> None:
    assoc, status = _echo_through_a_held_reactor(echo_port, ParkingCheckpoint)
    assert status == 0x0000
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0x0000  # the reactor runs on between sends
    assoc.release()
    assert assoc.is_released


def test_clear_waits_for_the_reactor_to_park() -> None:
    """The interleaving itself, without a network: ``clear`` returns only after a park."""
    state = {"paused": False}
    ready = threading.Event()
    resume = threading.Event()

    def reactor() -> None:  # pynetdicom's loop, held once in the unsafe window
        held_once = False
        while True:
            state["paused"] = True
            cp.wait()
            if not held_once:
                held_once = True
                ready.set()
                resume.wait(10)
            state["paused"] = False
            if stop.is_set():
                return

    stop = threading.Event()
    thread = threading.Thread(target=reactor, daemon=True)
    cp = ParkingCheckpoint(thread)
    thread.start()
    assert ready.wait(5)
    assert state["paused"]  # what pynetdicom's sender checks: stale, the race
    cleared = threading.Event()

    def clear() -> None:
        cp.clear()
        cleared.set()

    clearer = threading.Thread(target=clear, daemon=True)
    clearer.start()
    assert not cleared.wait(HOLD_S)  # clear() does not trust the stale flag
    resume.set()
    assert cleared.wait(5)  # the reactor came round and parked
    assert state["paused"] and cp._parked
    stop.set()
    cp.set()
    thread.join(5)
    assert not thread.is_alive()


def test_clear_returns_when_the_reactor_has_ended() -> None:
    thread = threading.Thread(target=lambda: None)
    thread.start()
    thread.join()
    cp = ParkingCheckpoint(thread, park_timeout=30)
    cp.clear()  # returns at once: nobody will park
    assert not cp.is_set()


def test_associate_closes_the_race_on_established_associations_only(echo_port: int) -> None:
    ae = AE(ae_title="SCU")
    ae.add_requested_context(Verification)
    assoc = associate(ae, "127.0.0.1", echo_port, ae_title="ECHO_SCP")
    assert isinstance(assoc._reactor_checkpoint, ParkingCheckpoint)
    assert assoc.send_c_echo().Status == 0x0000
    assoc.abort()  # abort sets the checkpoint so the reactor can exit
    assoc.join(5)
    assert not assoc.is_alive()
    refused = associate(ae, "127.0.0.1", free_port(), ae_title="ECHO_SCP")  # nobody listens
    assert not refused.is_established
    assert not isinstance(close_reactor_race(refused)._reactor_checkpoint, ParkingCheckpoint)
