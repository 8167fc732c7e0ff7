"""The wait for replies: polls that start fine and slow down to the steady interval."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from fedforget.strategies import messaging
from fedforget.strategies.messaging import FIRST_PULL_INTERVAL, PULL_INTERVAL, exchange


class _SlowGrid:
    """Two messages whose replies arrive at the ``answer_at``-th pull."""

    def __init__(self, answer_at: int) -> None:
        self.answer_at = answer_at
        self.pulls = 0

    def push_messages(self, messages):
        return ["m-1", "m-2"]

    def pull_messages(self, ids):
        self.pulls += 1
        if self.pulls < self.answer_at:
            return []
        return [SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=i)) for i in ids]


class _Clock:
    """A fake ``monotonic`` that a fake ``pause`` advances."""

    def __init__(self) -> None:
        self.now = 100.0
        self.waits: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def pause(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds + 0.001  # a poll takes a millisecond


@pytest.mark.parametrize("answer_at", [1, 2, 8, 60])
def test_a_wait_between_polls_is_a_tenth_of_the_time_waited(monkeypatch, answer_at):
    clock = _Clock()
    monkeypatch.setattr(messaging, "pause", clock.pause)
    monkeypatch.setattr(messaging, "monotonic", clock.monotonic)
    grid = _SlowGrid(answer_at)
    replies = exchange(grid, [], timeout=3600)
    assert sorted(r.metadata.reply_to_message_id for r in replies) == ["m-1", "m-2"]
    assert grid.pulls == answer_at
    assert len(clock.waits) == answer_at - 1
    waited = 0.0
    for wait in clock.waits:
        assert FIRST_PULL_INTERVAL <= wait <= PULL_INTERVAL
        assert wait == pytest.approx(max(FIRST_PULL_INTERVAL, min(waited / 10, PULL_INTERVAL)))
        waited += wait + 0.001
    if answer_at == 60:  # long exchanges settle at the steady interval
        assert clock.waits[-1] == PULL_INTERVAL


def test_the_exchange_stops_polling_at_its_timeout(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(messaging, "pause", clock.pause)
    monkeypatch.setattr(messaging, "monotonic", clock.monotonic)
    grid = _SlowGrid(answer_at=10**9)
    assert exchange(grid, [], timeout=5.0) == []
    assert 5.0 <= clock.now - 100.0 <= 5.0 + PULL_INTERVAL + 0.002
