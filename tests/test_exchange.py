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


@pytest.mark.parametrize("answer_at", [1, 2, 8])
def test_the_wait_between_polls_doubles_up_to_the_steady_interval(monkeypatch, answer_at):
    waits: list[float] = []
    monkeypatch.setattr(messaging, "pause", waits.append)
    grid = _SlowGrid(answer_at)
    replies = exchange(grid, [], timeout=3600)
    assert sorted(r.metadata.reply_to_message_id for r in replies) == ["m-1", "m-2"]
    expected = [min(FIRST_PULL_INTERVAL * 2**k, PULL_INTERVAL) for k in range(answer_at - 1)]
    assert waits == pytest.approx(expected)
    assert grid.pulls == answer_at
    if answer_at == 8:
        assert waits[-2:] == [PULL_INTERVAL, PULL_INTERVAL]
