"""Background threads that poll the database: the one loop the monitor, exporter and
embedded worker share.

State lives in the database, so a round that fails is logged and the next round
simply tries again; nothing here keeps work in memory.
"""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)


class PollingLoop:
    """Run ``run_once`` in ``threads`` daemon threads every ``poll_interval_s`` until stopped.

    With ``drain`` set, a round that did work (``run_once`` returned something
    truthy) is followed by the next at once instead of after the interval: a
    worker empties its queue before it sleeps.
    """

    name = "cmb-loop"
    drain = False

    def __init__(self, poll_interval_s: float, threads: int = 1) -> None:
        if threads < 1:
            raise ValueError(f"{type(self).__name__} needs at least one thread, got {threads}")
        self.poll_interval_s = poll_interval_s
        self.n_threads = threads
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def run_once(self) -> object:
        raise NotImplementedError

    def start(self) -> None:
        for i in range(self.n_threads):
            name = self.name if self.n_threads == 1 else f"{self.name}-{i}"
            t = threading.Thread(target=self._loop, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                worked = bool(self.run_once())
            except Exception:  # state is in the DB: the next round retries
                log.exception("%s round failed", self.name)
                worked = False
            if not (self.drain and worked):
                self._stop.wait(self.poll_interval_s)
