"""Memory and load sampling for the benchmarks: peak resident memory of a process tree."""

from __future__ import annotations

import os
import statistics
import threading
from collections.abc import Callable

import psutil

GIB = 2**30


class MemorySampler:
    """Samples the resident memory of this process and of its whole tree in a thread.

    It also samples the machine's 1-minute load average: on a shared machine a ratio of two
    measurements taken under different loads says more about the load than about fedforget.
    ``tree`` names the processes of the tree instead (ids; the deployment benchmark's are not
    all descendants of this process).
    """

    def __init__(self, interval: float = 0.5, tree: Callable[[], list[int]] | None = None) -> None:
        self.interval = interval
        self.tree = tree
        self.peak_self = 0
        self.peak_tree = 0
        self.loads: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def mean_load(self) -> float:
        """Mean 1-minute load average while sampling (nan before the first sample)."""
        return statistics.mean(self.loads) if self.loads else float("nan")

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            try:
                own = me.memory_info().rss
                if self.tree is None:
                    tree = own + sum(_rss(child) for child in me.children(recursive=True))
                else:
                    tree = sum(_pid_rss(pid) for pid in self.tree())
            except psutil.Error:
                continue
            self.peak_self = max(self.peak_self, own)
            self.peak_tree = max(self.peak_tree, tree)
            self.loads.append(os.getloadavg()[0])
            self._stop.wait(self.interval)


def _pid_rss(pid: int) -> int:
    """Resident bytes of process ``pid`` (0 once it is gone)."""
    try:
        return _rss(psutil.Process(pid))
    except psutil.Error:
        return 0


def _rss(process: psutil.Process) -> int:
    try:
        return process.memory_info().rss
    except psutil.Error:
        return 0
