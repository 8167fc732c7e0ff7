"""Messages to the nodes: send, wait a bounded time, record the nodes that fail.

Every exchange of the strategy goes through :class:`NodeMessenger`: a node that fails or does
not answer within the configured timeout is recorded as a fault (message, node, client, why)
and skipped by the next messages until the next FedAvg round, so that a vanished node costs
one timeout, not one per message, and never stalls the run.

Being the one place every message passes, the messenger also meters them (:class:`Traffic`):
bytes each way, the compute seconds the clients report, and the time spent waiting for
replies, so that a deletion step's communication and client cost is the difference of two
readings (:meth:`Traffic.since`).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from logging import WARN
from time import monotonic

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy.strategy_utils import sample_nodes

from fedforget import protocol as P
from fedforget.needs.records import arrays_from, data_in, messages_to, numpy_state
from fedforget.stopping import pause

__all__ = [
    "MessageConfigs",
    "NodeMessenger",
    "PendingQuery",
    "Traffic",
    "arrays_from",
    "data_in",
    "messages_to",
    "numpy_state",
]

PULL_INTERVAL = 0.1  # longest wait between polls for replies (send_and_receive sleeps 3 s)
FIRST_PULL_INTERVAL = 0.01  # shortest wait between polls
LATE_SHARE = 0.1  # a wait is at most this share of the time waited so far

Fault = dict[str, object]
"""``{"message", "node", "client", "error"}``: one node that gave no usable reply."""


def exchange(grid: Grid, messages: Iterable[Message], timeout: float) -> list[Message]:
    """Push ``messages`` and collect their replies until all arrived or ``timeout`` passed.

    ``Grid.send_and_receive`` with a finer poll (:func:`collect_replies`): on a deployment its
    fixed 3 s sleep between pulls is most of a message's round trip. Pushing fills in each
    message's id, so callers can match replies (``reply_to_message_id``) to what they sent.
    """
    waiting = set(grid.push_messages(messages))
    return collect_replies(grid, waiting, monotonic(), timeout)


def collect_replies(
    grid: Grid, waiting: set[str], pushed_at: float, timeout: float
) -> list[Message]:
    """The replies to the pushed messages ``waiting``, polled until all came or ``timeout``.

    The wait between polls is ``LATE_SHARE`` of the time since the push (``pushed_at``,
    ``monotonic`` seconds), between ``FIRST_PULL_INTERVAL`` and ``PULL_INTERVAL``: the last
    reply is collected at most about a tenth later than it arrived, whether the exchange is
    a deletion step's query answered in 0.15 s or a 7 s round (a doubling wait had left a
    reply that missed the 0.15 s poll waiting until 0.31 s). Messages pushed long before
    (a query overlapped with the server's own work) are collected at the first poll.
    """
    waiting = set(waiting)
    replies: list[Message] = []
    while waiting:
        arrived = list(grid.pull_messages(waiting))
        replies.extend(arrived)
        waiting.difference_update(reply.metadata.reply_to_message_id for reply in arrived)
        waited = monotonic() - pushed_at
        if not waiting or waited >= timeout:
            break
        pause(poll_wait(waited))  # returns at once when the run is being stopped
    return replies


def poll_wait(waited: float) -> float:
    """The wait before the next poll, after ``waited`` seconds without every reply."""
    return min(max(LATE_SHARE * waited, FIRST_PULL_INTERVAL), PULL_INTERVAL)


def error_reasons(replies: Iterable[Message]) -> str:
    """The distinct last lines of the replies' errors, or ``timeout`` when none failed."""
    reasons = {
        reply.error.reason.strip().splitlines()[-1] for reply in replies if reply.has_error()
    }
    return "; ".join(sorted(reasons)) or "timeout"


def failure_reason(replies: list[Message], sent: dict[str, int], node: int) -> str:
    """Why ``node`` gave no usable reply: its error (matched by message id), or a timeout."""
    for reply in replies:
        if not reply.has_error():
            continue
        target = sent.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)
        if target == node:
            return reply.error.reason.strip().splitlines()[-1] if reply.error.reason else "error"
    return "no reply before the timeout"


def record_value_bytes(value: object) -> int:
    """Payload bytes of one config or metric value: text as UTF-8, numbers 8 bytes each."""
    if isinstance(value, str):
        return len(value.encode())
    if isinstance(value, bytes):
        return len(value)
    if isinstance(value, list):
        return sum(record_value_bytes(item) for item in value)
    return 1 if isinstance(value, bool) else 8


def array_bytes(array: Array) -> int:
    """Bytes of the array's values (NumPy ``nbytes``), read from its shape and dtype."""
    return int(np.prod(array.shape, dtype=np.int64)) * np.dtype(array.dtype).itemsize


def payload_bytes(content: RecordDict) -> int:
    """The payload a message carries: its arrays' values and its config/metric entries.

    Arrays count their NumPy ``nbytes`` (what a model or a data sample weighs, without the
    serialisation's headers and names); config and metric entries count their keys and
    values (:func:`record_value_bytes`). Protobuf framing, TLS and metadata are not counted:
    the figure compares methods, it is not a wire capture.
    """
    total = 0
    for record in content.values():
        if isinstance(record, ArrayRecord):
            total += sum(array_bytes(a) for a in record.values())
        elif isinstance(record, (ConfigRecord, MetricRecord)):
            total += sum(len(k) + record_value_bytes(v) for k, v in record.items())
    return total


def reported_compute_seconds(reply: Message) -> float:
    """The compute seconds a client reports in its reply's metrics (0 when it reports none)."""
    if reply.has_error() or P.METRICS not in reply.content:
        return 0.0
    metrics = reply.content[P.METRICS]
    return float(metrics[P.COMPUTE_SECONDS]) if P.COMPUTE_SECONDS in metrics else 0.0


@dataclass
class Traffic:
    """What the messages cost so far: a running total, read before and after a step.

    ``bytes_to_clients`` and ``bytes_from_clients`` are :func:`payload_bytes` of the messages
    sent and of the replies received (errors carry none); ``client_seconds`` sums the
    :data:`~fedforget.protocol.COMPUTE_SECONDS` the clients report in their replies;
    ``waiting_seconds`` is the server's wall time spent waiting for replies; ``round_trips``
    counts the waits (one per exchange, however many nodes it reached): on a deployment each
    costs about a round's message latency, whatever its compute.
    """

    messages: int = 0
    round_trips: int = 0
    bytes_to_clients: int = 0
    bytes_from_clients: int = 0
    client_seconds: float = 0.0
    waiting_seconds: float = 0.0

    def snapshot(self) -> Traffic:
        """A copy of the totals now."""
        return Traffic(**{f.name: getattr(self, f.name) for f in fields(self)})

    def since(self, earlier: Traffic) -> Traffic:
        """What was exchanged between ``earlier`` (a snapshot) and now."""
        return Traffic(
            **{f.name: getattr(self, f.name) - getattr(earlier, f.name) for f in fields(self)}
        )

    def count(self, sent: list[Message], replies: list[Message], seconds: float) -> None:
        """Add one exchange: the messages sent, their replies and the time waited."""
        self.messages += len(sent)
        self.round_trips += bool(sent)
        self.bytes_to_clients += sum(payload_bytes(m.content) for m in sent)
        good = [reply for reply in replies if not reply.has_error()]
        self.bytes_from_clients += sum(payload_bytes(r.content) for r in good)
        self.client_seconds += sum(reported_compute_seconds(r) for r in good)
        self.waiting_seconds += seconds


@dataclass
class PendingQuery:
    """Messages pushed to the nodes whose replies are collected later.

    The server sends them, does its own work meanwhile (the unlearning), and collects with
    :meth:`NodeMessenger.receive`: a node's round trip then costs no server time.
    """

    messages: list[Message]
    waiting: set[str]
    pushed_at: float
    received: list[Message] | None = None


class MessageConfigs:
    """Every message's config: the run's entries, the round, the classes and a fresh seed.

    The seeds come from one seeded stream, which also samples the rounds' nodes: a run with
    the same seed sends the same configs to the same nodes.

    Parameters
    ----------
    entries : dict
        The run's entries (:meth:`StrategySettings.message_config`).
    num_classes : int
        Classes of the federation's model (the clients build it).
    seed : int
        The run's seed.
    """

    def __init__(self, entries: dict[str, str], num_classes: int, seed: int) -> None:
        self.entries = entries
        self.num_classes = num_classes
        self.seed = seed
        self.rng = random.Random(seed)

    def reseed(self, seed: int) -> None:
        """Draw this strategy's seeds (and samples) from ``seed`` from now on (a reference
        retrain with its own batch order)."""
        self.seed = seed
        self.rng = random.Random(seed)

    def for_round(self, server_round: int) -> dict:
        """A FedAvg round's config entries."""
        seed = self.seed * 1_000_003 + server_round * 10_007 + self.rng.randrange(10**6)
        return {
            **self.entries,
            P.SERVER_ROUND: server_round,
            P.NUM_CLASSES: self.num_classes,
            P.SEED: seed,
        }

    def __call__(self, **extra: object) -> ConfigRecord:
        """The config of a message outside the FedAvg rounds, with ``extra`` entries."""
        return ConfigRecord({**self.for_round(0), **extra})


class NodeMessenger:
    """Sends records to the federation's nodes and keeps track of the ones that fail.

    Parameters
    ----------
    timeout : float
        Seconds to wait for the replies to any message.
    min_available_nodes : int
        Nodes to wait for before the federation's first round.
    client_of : Callable[[int], int]
        Node id -> partition id (``-1`` when unknown), for the fault records.
    on_fault : Callable[[Fault], None]
        Called with each fault, after it was logged.
    """

    def __init__(
        self,
        timeout: float,
        min_available_nodes: int,
        client_of: Callable[[int], int],
        on_fault: Callable[[Fault], None],
    ) -> None:
        self.timeout = timeout
        self.min_available_nodes = min_available_nodes
        self.client_of = client_of
        self.on_fault = on_fault
        self.excluded: set[int] = set()  # nodes that left the federation
        self.suspects: set[int] = set()  # failed since the last FedAvg round: not asked again
        self.federation_running = False
        self.traffic = Traffic()
        self.orders: dict[int, ConfigRecord] = {}  # drop orders riding on the next message
        self.on_order_done: Callable[..., None] = lambda nodes, confirmed=True: None

    def new_round(self) -> None:
        """Every node gets a new chance in each FedAvg round."""
        self.suspects.clear()

    def exclude(self, nodes: Iterable[int]) -> None:
        """These nodes left the federation (``client`` mode): never ask them again."""
        self.excluded.update(nodes)

    def active_nodes(self, grid: Grid) -> list[int]:
        """Connected nodes that neither left nor failed since the last FedAvg round.

        Waits for the whole federation only at the start: later, a node that vanished must
        not stall the run (it is skipped and recorded as a fault).
        """
        needed = 1 if self.federation_running else self.min_available_nodes
        _, all_nodes = sample_nodes(grid, needed, 0)
        skipped = self.excluded | self.suspects
        return sorted(n for n in all_nodes if n not in skipped)

    def sample(self, grid: Grid, fraction: float, min_nodes: int, rng: random.Random) -> list[int]:
        """A FedAvg round's nodes: ``fraction`` of the active ones, at least ``min_nodes``."""
        nodes = self.active_nodes(grid)
        size = max(min_nodes, int(len(nodes) * fraction))
        return nodes if size >= len(nodes) else sorted(rng.sample(nodes, size))

    def exchange(self, grid: Grid, messages: list[Message]) -> list[Message]:
        """Every reply (errors included) that arrived within the timeout; metered.

        The nodes that failed are recorded as faults, as :meth:`receive` does: a node that
        refuses to train (a deletion ledger it cannot trust) is named with its reason.
        """
        pending = self.send_messages(grid, messages)
        replies = self._collect(grid, pending)
        self._record_faults(pending, replies)
        return replies

    def send_messages(self, grid: Grid, messages: list[Message]) -> PendingQuery:
        """Push ``messages`` now (drop orders riding on them); :meth:`receive` collects."""
        messages = [self._with_order(message) for message in messages]
        waiting = set(grid.push_messages(messages))
        return PendingQuery(messages, waiting, monotonic())

    def carry_order(self, nodes: Iterable[int], config: ConfigRecord) -> None:
        """The order to drop D_f rides on the next message to each of ``nodes``.

        On a deployment every message costs a round trip whatever it carries; the node
        carries the order out before it handles the message (its D_f is gone before it
        trains or scores anything), and its reply says so (:data:`~fedforget.protocol.
        ORDER_DONE`), which calls :attr:`on_order_done`.
        """
        for node in nodes:
            self.orders[node] = config

    def _with_order(self, message: Message) -> Message:
        order = self.orders.get(message.metadata.dst_node_id)
        if order is None or message.metadata.message_type == P.DELETION_COMPLETE:
            return message
        meta = message.metadata
        return Message(
            content=RecordDict({**message.content, P.DROP_ORDER: order}),
            dst_node_id=meta.dst_node_id,
            message_type=meta.message_type,
            group_id=meta.group_id or None,
        )

    def flush_orders(self, grid: Grid) -> None:
        """Send the orders still riding (no message went to their nodes), on their own; the
        orders no node confirmed are reported (``on_order_done(nodes, confirmed=False)``)."""
        if not self.orders:
            return
        nodes = [node for node in self.active_nodes(grid) if node in self.orders]
        if nodes:
            messages = [
                Message(
                    content=RecordDict({P.CONFIG: self.orders[node]}),
                    dst_node_id=node,
                    message_type=P.DELETION_COMPLETE,
                )
                for node in nodes
            ]
            self.receive(grid, self.send_messages(grid, messages))
        if self.orders:
            self.on_order_done(list(self.orders), confirmed=False)

    def send(
        self, grid: Grid, nodes: list[int], message_type: str, record: RecordDict
    ) -> PendingQuery:
        """Push ``record`` to ``nodes`` now; :meth:`receive` collects the replies."""
        return self.send_messages(grid, messages_to(record, nodes, message_type))

    def query(
        self,
        grid: Grid,
        nodes: list[int],
        message_type: str,
        record: RecordDict,
        strict: bool = False,
    ) -> list[Message]:
        """Send ``record`` to ``nodes``; the good replies that came back within the timeout.

        Nodes that fail or do not answer in time are recorded as faults; with ``strict`` that
        is an error instead.

        Raises
        ------
        RuntimeError
            With ``strict``, when a node gave no usable reply.
        """
        return self.receive(grid, self.send(grid, nodes, message_type, record), strict)

    def receive(self, grid: Grid, pending: PendingQuery, strict: bool = False) -> list[Message]:
        """The good replies to ``pending`` (sorted by client), its faults recorded, as
        :meth:`query`; collected once: a second call returns the same replies."""
        if pending.received is not None:
            return pending.received
        replies = self._collect(grid, pending)
        faults = self._faults(pending, replies)
        if faults and strict:
            raise RuntimeError(
                f"{faults[0]['message']}: {len(faults)} of {len(pending.messages)} clients did "
                f"not answer ({faults[0]['error']})"
            )
        self._record_faults(pending, replies, faults)
        good = [reply for reply in replies if not reply.has_error()]
        pending.received = sorted(good, key=lambda r: self.order_key(r.metadata.src_node_id))
        return pending.received

    def _faults(self, pending: PendingQuery, replies: list[Message]) -> list[Fault]:
        """One fault per message whose node gave no usable reply."""
        sent = {m.metadata.message_id: m.metadata.dst_node_id for m in pending.messages}
        answered = {reply.metadata.src_node_id for reply in replies if not reply.has_error()}
        return [
            {
                "message": message.metadata.message_type,
                "node": message.metadata.dst_node_id,
                "client": self.client_of(message.metadata.dst_node_id),
                "error": failure_reason(replies, sent, message.metadata.dst_node_id),
            }
            for message in pending.messages
            if message.metadata.dst_node_id not in answered
        ]

    def _record_faults(
        self, pending: PendingQuery, replies: list[Message], faults: list[Fault] | None = None
    ) -> None:
        """Log and record each fault; its node is skipped until the next FedAvg round."""
        for fault in self._faults(pending, replies) if faults is None else faults:
            self.suspects.add(int(fault["node"]))  # type: ignore[call-overload]
            log(WARN, "%s: node %s skipped (%s)", fault["message"], fault["node"], fault["error"])
            self.on_fault(fault)

    def _collect(self, grid: Grid, pending: PendingQuery) -> list[Message]:
        """Every reply to ``pending`` within the timeout (errors included); metered."""
        started = time.perf_counter()
        replies = collect_replies(grid, pending.waiting, pending.pushed_at, self.timeout)
        self.traffic.count(pending.messages, replies, time.perf_counter() - started)
        done = [reply.metadata.src_node_id for reply in replies if _order_done(reply)]
        for node in done:
            self.orders.pop(node, None)
        if done:
            self.on_order_done(done)
        return replies

    def order_key(self, node: int) -> tuple[int, int]:
        """Replies arrive in no fixed order, and node ids change from run to run: sorting by
        partition id makes every sum over replies (FedAvg, D_f's order) reproducible."""
        return self.client_of(node), node


def _order_done(reply: Message) -> bool:
    """Whether ``reply`` says its node carried out a drop order (the metric is taken out: a
    training reply's metrics are averaged with the others', which lack it)."""
    if reply.has_error():
        return False
    if reply.metadata.message_type == P.DELETION_COMPLETE:
        return True
    metrics = reply.content.metric_records.get(P.METRICS)
    return metrics is not None and metrics.pop(P.ORDER_DONE, None) is not None
