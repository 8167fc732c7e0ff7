"""A process-wide stop request: how Ctrl-C reaches code that waits for replies.

The ServerApp of a simulation runs in a thread that spends most of its time waiting for the
clients' replies, while Python delivers Ctrl-C to the main thread only. The main thread calls
:func:`request_stop`; every wait loop sleeps through :func:`pause`, which raises
:class:`RunStoppedError` once a stop is requested, so the ServerApp thread ends within one poll
interval instead of waiting for the message timeout. Nothing here imports Flower.
"""

from __future__ import annotations

import threading

__all__ = ["RunStoppedError", "clear_stop", "pause", "request_stop", "stop_requested"]

_STOP = threading.Event()


class RunStoppedError(RuntimeError):
    """The run was asked to stop (Ctrl-C or SIGTERM) while it waited."""


def request_stop() -> None:
    """Ask every waiting loop of this process to stop."""
    _STOP.set()


def clear_stop() -> None:
    """Forget an earlier stop request (a new run starts)."""
    _STOP.clear()


def stop_requested() -> bool:
    """Whether a stop was requested."""
    return _STOP.is_set()


def pause(seconds: float) -> None:
    """Sleep ``seconds``, or raise :class:`RunStoppedError` as soon as a stop is requested."""
    if _STOP.wait(seconds):
        raise RunStoppedError("the run was interrupted")
