"""The per-node message lookup returns what Flower's returns, checking only the node's messages."""

from __future__ import annotations

import copy
import threading
from queue import Queue
from types import SimpleNamespace

import pytest
from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState

from fedforget.simulations import linkstate
from fedforget.simulations.linkstate import (
    dispatch_on_arrival,
    get_message_ins_per_node,
    indexed_store,
    per_node_message_lookup,
    supported,
)

FLOWER_LOOKUP = InMemoryLinkState.get_message_ins
FLOWER_STORE = InMemoryLinkState.store_message_ins
FLOWER_SWEEP = linkstate.vce_api.add_messages_to_queue


class FakeState:
    """The parts of ``InMemoryLinkState`` both lookups use; counts the validity checks."""

    def __init__(self, messages: dict[str, SimpleNamespace], expired: set[str]) -> None:
        self.lock = threading.RLock()
        self.message_ins_store = messages
        self.expired = expired
        self.checked: list[str] = []

    def store_message_ins(self, message: SimpleNamespace) -> str | None:
        self.message_ins_store[message.metadata.message_id] = message
        return message.metadata.message_id

    def _check_stored_messages(self, message_ids: set[str], run_id: int | None = None) -> None:
        for msg_id in message_ids:
            self.checked.append(msg_id)
            if msg_id in self.expired:
                self.message_ins_store.pop(msg_id, None)


def _message(node: int, run: int = 1, delivered: str = "", key: str = "") -> SimpleNamespace:
    return SimpleNamespace(
        metadata=SimpleNamespace(
            dst_node_id=node, run_id=run, delivered_at=delivered, message_id=key
        )
    )


def _store() -> tuple[dict[str, SimpleNamespace], set[str]]:
    messages = {
        "a": _message(1),
        "b": _message(2),
        "c": _message(1, delivered="2026-01-01T00:00:00"),
        "d": _message(1),
        "e": _message(3, run=2),
        "f": _message(2),
        "g": _message(1),
    }
    return messages, {"d", "f"}  # expired


def _both(node: int, limit: int | None, run_id: int | None = None):
    messages, expired = _store()
    flower = FakeState(copy.deepcopy(messages), set(expired))
    ours = FakeState(copy.deepcopy(messages), set(expired))
    got_flower = FLOWER_LOOKUP(flower, node, limit, run_id=run_id)
    got_ours = get_message_ins_per_node(ours, node, limit, run_id=run_id)
    return flower, got_flower, ours, got_ours


def _ids(state: FakeState, found: list) -> list[str]:
    by_identity = {id(msg): key for key, msg in state.message_ins_store.items()}
    return [by_identity[id(msg)] for msg in found]


@pytest.mark.parametrize("node", [1, 2, 3, 4])
@pytest.mark.parametrize("limit", [1, 2, None])
@pytest.mark.parametrize("run_id", [None, 1, 2])
def test_the_lookup_returns_what_flowers_returns(node, limit, run_id):
    flower, got_flower, ours, got_ours = _both(node, limit, run_id)
    assert _ids(ours, got_ours) == _ids(flower, got_flower)
    assert all(msg.metadata.delivered_at for msg in got_ours)
    # Left to deliver: the same, but for expired messages of other nodes, which Flower drops
    # at any node's poll and the lookup at their own node's poll.
    assert _pending(ours) - ours.expired == _pending(flower) - flower.expired


def _pending(state: FakeState) -> set[str]:
    return {k for k, m in state.message_ins_store.items() if not m.metadata.delivered_at}


def test_an_expired_message_for_the_node_is_dropped_not_returned():
    _, _, ours, got = _both(node=1, limit=None)
    assert _ids(ours, got) == ["a", "g"]
    assert "d" not in ours.message_ins_store


def test_only_the_nodes_own_messages_are_checked():
    flower, _, ours, _ = _both(node=2, limit=None)
    assert sorted(ours.checked) == ["b", "f"]
    assert len(flower.checked) == 7  # Flower checks every stored message


def test_messages_stored_later_are_found_once_in_storage_order():
    messages, expired = _store()
    state = FakeState(messages, expired)
    store = indexed_store(FakeState.store_message_ins)
    assert _ids(state, get_message_ins_per_node(state, 2, limit=None)) == ["b"]
    for key, node in (("h", 2), ("i", 1), ("j", 2), ("h", 2)):  # "h" twice: stored once
        store(state, _message(node, key=key))
    assert _ids(state, get_message_ins_per_node(state, 2, limit=1)) == ["h"]
    assert _ids(state, get_message_ins_per_node(state, 2, limit=None)) == ["j"]
    assert get_message_ins_per_node(state, 2, limit=None) == []
    assert _ids(state, get_message_ins_per_node(state, 1, limit=None)) == ["a", "g", "i"]


def test_the_lookup_is_swapped_in_for_the_block_only():
    assert supported()
    with per_node_message_lookup() as swapped:
        assert swapped
        assert InMemoryLinkState.get_message_ins is get_message_ins_per_node
        assert InMemoryLinkState.store_message_ins is not FLOWER_STORE
        assert linkstate.vce_api.add_messages_to_queue is dispatch_on_arrival
    assert linkstate.vce_api.add_messages_to_queue is FLOWER_SWEEP
    assert InMemoryLinkState.get_message_ins is FLOWER_LOOKUP
    assert InMemoryLinkState.store_message_ins is FLOWER_STORE


def test_other_flower_versions_keep_flowers_lookup():
    assert supported("1.42.0") and supported("1.41.3")
    assert not supported("1.43.0") and not supported("2.0.0")


def test_a_stored_message_is_dispatched_without_waiting_for_the_next_sweep(monkeypatch):
    monkeypatch.setattr(linkstate, "SWEEP_INTERVAL", 3600.0)  # only an arrival can wake it
    state = FakeState({}, set())
    store = indexed_store(FakeState.store_message_ins)
    monkeypatch.setattr(FakeState, "get_message_ins", get_message_ins_per_node, raising=False)
    queue: Queue = Queue()
    stop = threading.Event()
    sweeper = threading.Thread(target=dispatch_on_arrival, args=(state, queue, {1: 0, 2: 1}, stop))
    sweeper.start()
    try:
        for key, node in (("a", 2), ("b", 1)):
            store(state, _message(node, key=key))
            assert queue.get(timeout=60).metadata.message_id == key
    finally:
        stop.set()
        store(state, _message(1, key="wake"))  # the arrival ends the wait; the loop sees stop
        sweeper.join(timeout=60)
    assert not sweeper.is_alive()
