"""A per-node lookup of pending messages for Flower's in-memory LinkState (simulations only).

Flower 1.41-1.42's simulation engine polls every registered node every 0.1 s
(``flwr.server.superlink.fleet.vce.vce_api.add_messages_to_queue``) with
``InMemoryLinkState.get_message_ins(node_id, limit=1)``, and that method runs the full
validity check (``_check_stored_messages``: expiry, federation membership) on *every* stored
message before it compares the destination. A round keeps one message per sampled node in
the store until its reply is pulled, so one sweep costs (registered nodes) x (messages of the
round) checks: 90,000 at 300 clients, 50,000 at 1,000 clients sampled at 5 %. That sweep runs
in the simulation's own process and took a core away from the client actors on a 2-core
machine (docs/results.md, the benchmark's round / floor before and after).

:func:`per_node_message_lookup` keeps an index of the stored messages by destination
(filled by ``store_message_ins``, which Flower uses for every message to a node) and looks
up only the node's own messages, so a sweep costs one dictionary lookup per node. What it
returns is what Flower's method returns (same messages, order, ``limit``, delivery marks and
expiry of the candidates); the one difference is *when* an expired message addressed to
another node is deleted: at that node's own poll (0.1 s later) or when the server pulls
replies, both of which check it.

The same engine thread then sleeps 0.1 s between sweeps, so every exchange waited on
average 50 ms before its messages reached the client actors: a third of a 0.15 s query of
the deletion step. :func:`dispatch_on_arrival` is that thread's loop with the sleep cut short
when a message is stored (an event set by the indexed ``store_message_ins``); it still sweeps
at least every 0.1 s, and a burst of stored messages costs as many sweeps as fit in the burst.

The swaps are applied only around fedforget's in-process simulations and only on the Flower
versions it was written against; any other version keeps Flower's own method.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from queue import Queue
from typing import Any

import flwr

PATCHED_VERSIONS = ("1.41.", "1.42.")


try:
    from flwr.server.superlink.fleet.vce import vce_api
    from flwr.server.superlink.linkstate import in_memory_linkstate
except ImportError:  # pragma: no cover - another Flower layout: keep Flower's method
    in_memory_linkstate = vce_api = None

SWEEP_INTERVAL = 0.1  # Flower's wait between two sweeps when no message arrives


def supported(version: str = flwr.__version__) -> bool:
    """Whether the lookup was written against this Flower version."""
    return version.startswith(PATCHED_VERSIONS)


PENDING_INDEX = "_fedforget_pending_by_node"
ARRIVAL_EVENT = "_fedforget_message_stored"


def _arrival_event(state: Any) -> threading.Event:
    """The event set whenever a message to a node is stored (made on first use)."""
    event = getattr(state, ARRIVAL_EVENT, None)
    if event is None:
        event = threading.Event()
        setattr(state, ARRIVAL_EVENT, event)
    return event


def _pending_index(state: Any) -> dict[int, dict[str, None]]:
    """Node -> ids of its stored messages in storage order (built from the store on first use)."""
    index = getattr(state, PENDING_INDEX, None)
    if index is None:
        index = {}
        for msg_id, msg in state.message_ins_store.items():
            index.setdefault(msg.metadata.dst_node_id, {})[msg_id] = None
        setattr(state, PENDING_INDEX, index)
    return index


def indexed_store(store: Callable[[Any, Any], str | None]) -> Callable[[Any, Any], str | None]:
    """Wrap ``InMemoryLinkState.store_message_ins`` so that it also indexes the stored message."""

    def store_message_ins(self: Any, message: Any) -> str | None:
        message_id = store(self, message)
        if message_id is not None:
            with self.lock:
                _pending_index(self).setdefault(message.metadata.dst_node_id, {})[message_id] = None
                _arrival_event(self).set()
        return message_id

    return store_message_ins


def get_message_ins_per_node(
    self: Any, node_id: int, limit: int | None, *, run_id: int | None = None
) -> list:
    """``InMemoryLinkState.get_message_ins`` that looks at the messages for ``node_id`` only."""
    if limit is not None and limit < 1:
        raise AssertionError("`limit` must be >= 1")
    found: list = []
    with self.lock:
        pending = _pending_index(self).get(node_id, {})
        for msg_id in list(pending):
            msg = self.message_ins_store.get(msg_id)
            if msg is None or msg.metadata.delivered_at != "":
                del pending[msg_id]  # deleted or delivered: never returned again
                continue
            if run_id is not None and msg.metadata.run_id != run_id:
                continue
            self._check_stored_messages({msg_id})  # expiry and federation, as Flower does
            if (msg := self.message_ins_store.get(msg_id)) is None:
                del pending[msg_id]
                continue
            found.append(msg)
            if limit and len(found) == limit:
                break
    delivered_at = in_memory_linkstate.now().isoformat()  # the clock Flower's method uses
    for msg in found:
        msg.metadata.delivered_at = delivered_at
    return found


def dispatch_on_arrival(
    state: Any, queue: Queue, nodes_mapping: dict[int, int], f_stop: threading.Event
) -> None:
    """``vce_api.add_messages_to_queue`` that sweeps again as soon as a message is stored."""
    arrived = _arrival_event(state)
    while not f_stop.is_set():
        arrived.clear()  # before the sweep: a message stored during it wakes the next wait
        for node_id in nodes_mapping:
            for message in state.get_message_ins(node_id=node_id, limit=1):
                queue.put(message)
        arrived.wait(SWEEP_INTERVAL)


@contextlib.contextmanager
def per_node_message_lookup() -> Iterator[bool]:
    """Use the indexed lookup and the prompt dispatch in the block; yields whether in use."""
    if in_memory_linkstate is None or vce_api is None or not supported():
        yield False
        return
    state_class = in_memory_linkstate.InMemoryLinkState
    lookup, store = state_class.get_message_ins, state_class.store_message_ins
    sweep = vce_api.add_messages_to_queue
    state_class.get_message_ins = get_message_ins_per_node
    state_class.store_message_ins = indexed_store(store)
    vce_api.add_messages_to_queue = dispatch_on_arrival
    try:
        yield True
    finally:
        state_class.get_message_ins, state_class.store_message_ins = lookup, store
        vce_api.add_messages_to_queue = sweep
