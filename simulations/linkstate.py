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

The swap is applied only around fedforget's in-process simulations and only on the Flower
versions it was written against; any other version keeps Flower's own method.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import flwr

PATCHED_VERSIONS = ("1.41.", "1.42.")


try:
    from flwr.server.superlink.linkstate import in_memory_linkstate
except ImportError:  # pragma: no cover - another Flower layout: keep Flower's method
    in_memory_linkstate = None


def supported(version: str = flwr.__version__) -> bool:
    """Whether the lookup was written against this Flower version."""
    return version.startswith(PATCHED_VERSIONS)


PENDING_INDEX = "_fedforget_pending_by_node"


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


@contextlib.contextmanager
def per_node_message_lookup() -> Iterator[bool]:
    """Use :func:`get_message_ins_per_node` in the block; yields whether it is in use."""
    if in_memory_linkstate is None or not supported():
        yield False
        return
    state_class = in_memory_linkstate.InMemoryLinkState
    lookup, store = state_class.get_message_ins, state_class.store_message_ins
    state_class.get_message_ins = get_message_ins_per_node
    state_class.store_message_ins = indexed_store(store)
    try:
        yield True
    finally:
        state_class.get_message_ins, state_class.store_message_ins = lookup, store
