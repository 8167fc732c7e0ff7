"""The deletion ledger: pending requests, what each node is, what the deletion step did.

The clients report their deletion requests in their training replies
(:data:`~fedforget.protocol.DELETION_PENDING`, and for node-side requests the request ids and
classes); :class:`DeletionLedger` notes them, together with the sample passes over deleted
data (:class:`Bookkeeping`) and each node's partition id, until the strategy carries them out.
The deletion step writes what it did into one :class:`DeletionRecord`, which becomes the run
summary's :class:`~fedforget.report.summary.DeletionSummary` in one conversion.

A run may carry out several deletion steps (sequential requests). The record then describes
the latest step, with the ``requests`` and ``faults`` of every step so far (what a
single-step run always reported), and :attr:`DeletionLedger.steps` keeps a copy of each
step as it ended, with its own requests and faults only.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields, replace
from logging import INFO, WARN

from flwr.app import Message
from flwr.common.logger import log

from fedforget import protocol as P
from fedforget.data.sources import ArrayDataset
from fedforget.report.summary import Bookkeeping as BookkeepingSummary
from fedforget.report.summary import DeletionSummary
from fedforget.strategies.messaging import Traffic, data_in

RequestsFiled = tuple[list[str], list[int]]
"""A node's filed request ids and the classes they name."""

CONFIRMED, PENDING, CONFIRMED_LATER = "confirmed", "pending", "confirmed_later"
"""A request entry's ``status``: the node's reply to ``query.deletion_complete`` confirmed
that it recorded the deletion; no confirmation came (``fault`` says why; the node still holds
the request and reports it again); a later step's entry holds the confirmation."""


@dataclass
class DeletionRecord:
    """What the deletion step did and how long each part took."""

    round: int = 0
    clients: list[int] = field(default_factory=list)
    forget_samples: int = 0
    unlearning_seconds: float = 0.0
    recovery_seconds: float = 0.0
    relay_hops: int = 0
    relay_min_accuracy: float | None = None
    relay_hops_kept: int = 0
    relay_stop: str | None = None
    relay_trace: list[dict] = field(default_factory=list)
    relay_objective_start: float | None = None
    relay_objective_before: float | None = None
    relay_objective: float | None = None
    relay_objective_source: str | None = None
    relay_client_calls: int = 0
    forget_samples_received: int = 0
    retain_samples: int = 0
    history_bytes: int = 0
    client_training_calls: int = 0
    nodes: list[int] = field(default_factory=list)
    requests: list[dict] = field(default_factory=list)
    faults: list[dict] = field(default_factory=list)
    node_forget_accuracy: dict[str, float] = field(default_factory=dict)
    node_forget_samples: int = 0
    generator_client_seconds: float = 0.0
    generator_bytes: int = 0
    distillation_client_seconds: float = 0.0
    synthetic_bytes: int = 0
    auxiliary_client_seconds: float = 0.0
    auxiliary_bytes: int = 0
    bytes_to_clients: int = 0
    bytes_from_clients: int = 0
    forget_bytes_with_requests: int = 0
    """D_f that came with the requests (in training or status replies): part of the step's
    traffic."""
    client_compute_seconds: float = 0.0
    server_seconds: float = 0.0

    @property
    def wall_seconds(self) -> float:
        """The deletion step's wall time: unlearning plus recovery."""
        return self.unlearning_seconds + self.recovery_seconds

    def add_cost(self, traffic: Traffic) -> None:
        """The deletion step's messages: bytes each way, client compute, and the server's own
        time (the step's wall time less the time it waited for replies)."""
        self.bytes_to_clients = traffic.bytes_to_clients
        self.bytes_from_clients = traffic.bytes_from_clients + self.forget_bytes_with_requests
        self.client_compute_seconds = traffic.client_seconds
        self.server_seconds = max(0.0, self.wall_seconds - traffic.waiting_seconds)

    def summary(self, mode: str, forget_classes: list[int]) -> DeletionSummary:
        """The run summary's view: the configured deletion plus what this step did.

        Without configured ``forget_classes`` (node-side requests) the classes are the ones
        the carried-out requests named.
        """
        named = sorted({c for request in self.requests for c in request["classes"]})
        fields = {k: v for k, v in asdict(self).items() if k in DeletionSummary.model_fields}
        fields.update(
            mode=mode, round=self.round or None, forget_classes=list(forget_classes) or named
        )
        return DeletionSummary(**fields)


KEPT_ACROSS_STEPS = frozenset(
    {
        "requests",
        "faults",
        "generator_client_seconds",
        "generator_bytes",
        "distillation_client_seconds",
        "auxiliary_client_seconds",
    }
)
"""Record fields a new deletion step does not reset: lists over every step, training costs
(the clients' work during training happens before the step that opens the record)."""


def _start_step(record: DeletionRecord) -> None:
    """Reset what one deletion step measures, so that a later step does not add to it."""
    fresh = DeletionRecord()
    for item in fields(DeletionRecord):
        if item.name not in KEPT_ACROSS_STEPS:
            setattr(record, item.name, getattr(fresh, item.name))


@dataclass
class Bookkeeping:
    """Sample passes over deleted samples, before and after their deletion was carried out."""

    deleted_passes_before: int = 0
    deleted_passes_after: int = 0

    @property
    def total(self) -> int:
        """Every pass over a deleted sample so far."""
        return self.deleted_passes_before + self.deleted_passes_after

    def summary(self) -> BookkeepingSummary:
        """The run summary's view."""
        return BookkeepingSummary(
            deleted_passes_before_deletion=self.deleted_passes_before,
            deleted_passes_after_deletion=self.deleted_passes_after,
        )


class DeletionLedger:
    """Pending deletion requests and the record of the deletion step that carries them out.

    Parameters
    ----------
    mode : str
        The configured deletion mode; ``requests`` takes mode and classes from what the
        nodes filed.
    forget_classes : tuple of int
        The configured forgotten classes (``class`` mode).
    """

    def __init__(self, mode: str, forget_classes: tuple[int, ...]) -> None:
        self.mode = mode
        self.forget_classes = tuple(forget_classes)
        self.record = DeletionRecord()
        self.bookkeeping = Bookkeeping()
        self.partition_of: dict[int, int] = {}
        self.pending: dict[int, int] = {}  # node id -> samples to delete
        self.filed: dict[int, RequestsFiled] = {}  # node-side requests (``requests`` mode)
        self.forget_sent: dict[int, ArrayDataset] = {}
        """D_f that nodes sent with their request (``attach-forget``), until it is used."""
        self.compute_seconds = 0.0  # client compute since the last reset (one FedAvg round)
        self.steps: list[DeletionRecord] = []  # each finished deletion step, in order
        self._faults_before_step = 0

    def client_of(self, node: int) -> int:
        """The partition id of ``node`` (``-1`` before it first replied)."""
        return self.partition_of.get(node, -1)

    def record_fault(self, fault: dict) -> None:
        """Keep a node's failure in the deletion record."""
        self.record.faults.append(fault)

    def take_over(self, parent: DeletionLedger) -> None:
        """Continue from ``parent``'s requests and node ids (a ``compare`` branch)."""
        self.pending = dict(parent.pending)
        self.filed = dict(parent.filed)
        self.forget_sent = dict(parent.forget_sent)
        self.partition_of = dict(parent.partition_of)

    # ------------------------------------------------------------------ client replies
    def note_train_reply(self, reply: Message) -> None:
        """A training (or status) reply: partition id, compute, deleted passes, requests.

        A D_f sent with the request is taken out of the reply (FedAvg expects the model as
        its only arrays) and kept in :attr:`forget_sent`.
        """
        metrics = reply.content[P.METRICS]
        node = reply.metadata.src_node_id
        self.partition_of[node] = int(metrics[P.PARTITION_ID])
        self.compute_seconds += float(metrics[P.COMPUTE_SECONDS])
        passes = int(metrics[P.DELETED_PASSES])
        if int(metrics[P.DELETION_DONE]):
            self.bookkeeping.deleted_passes_after += passes
        else:
            self.bookkeeping.deleted_passes_before += passes
        self.forget_sent.pop(node, None)
        sent = reply.content.get(P.DATA)
        if sent is not None:
            del reply.content[P.DATA]
        if int(metrics[P.DELETION_PENDING]):
            self.pending[node] = int(metrics[P.NUM_FORGET])
            if P.DELETION in reply.content:
                filed = reply.content[P.DELETION]
                self.filed[node] = (list(filed[P.REQUESTS]), list(filed[P.CLASSES]))
            if sent is not None:
                self.forget_sent[node] = data_in(sent)

    # ------------------------------------------------------------------ the deletion step
    def open_deletion(self, server_round: int) -> list[int]:
        """Move the pending requests into the record of this round's deletion; their nodes."""
        nodes = sorted(self.pending)
        record = self.record
        _start_step(record)
        self._faults_before_step = len(record.faults)
        record.forget_samples = sum(self.pending.values())
        for node in nodes:
            ids, classes = self.filed.get(node, ([], list(self.forget_classes)))
            record.requests.append(
                {
                    "round": server_round,
                    "client": self.client_of(node),
                    "node": node,
                    "requests": ids,
                    "classes": classes,
                    "samples": self.pending[node],
                    "status": PENDING,  # until the node confirms (confirm_deletion)
                }
            )
        self.pending.clear()
        record.round = server_round
        record.clients = sorted(self.client_of(n) for n in nodes)
        record.nodes = nodes
        return nodes

    def confirm_deletion(self, confirmed: Iterable[int]) -> None:
        """Set the status of this step's requests from the nodes that confirmed them.

        ``confirmed`` are the nodes whose reply to ``query.deletion_complete`` arrived; every
        other request of the step stays ``pending`` with the node's latest fault of the step.
        A confirmation also settles the same client's earlier unconfirmed entries for these
        requests (``confirmed_later``, with ``confirmed_round``).
        """
        confirmed = set(confirmed)
        record = self.record
        step_faults = record.faults[self._faults_before_step :]
        for entry in (e for e in record.requests if e["round"] == record.round):
            if entry["node"] in confirmed:
                entry["status"] = CONFIRMED
                entry.pop("fault", None)
                self._settle_earlier(entry)
                log(INFO, "deletion:   client %d (node %d) confirmed %s", *_told(entry))
                continue
            faults = [f for f in step_faults if f["node"] == entry["node"]]
            entry["fault"] = faults[-1] if faults else None
            log(
                WARN,
                "deletion:   client %d (node %d) did not confirm %s: pending on the node, "
                "carried out when it reports it again",
                *_told(entry),
            )

    def _settle_earlier(self, entry: dict) -> None:
        for earlier in self.record.requests:
            if (
                earlier["round"] < entry["round"]
                and earlier.get("status") == PENDING
                and earlier["client"] == entry["client"]
                and set(earlier["requests"]) <= set(entry["requests"])
            ):
                earlier.update(status=CONFIRMED_LATER, confirmed_round=entry["round"])

    def close_deletion(self, traffic: Traffic) -> None:
        """The deletion step ended: record what its messages cost; keep a copy of the step."""
        record = self.record
        record.add_cost(traffic)
        step = replace(
            record,
            requests=[r for r in record.requests if r["round"] == record.round],
            faults=record.faults[self._faults_before_step :],
            clients=list(record.clients),
            nodes=list(record.nodes),
        )
        self.steps.append(step)

    def step_summaries(self, mode: str, forget_classes: list[int]) -> list[DeletionSummary]:
        """Every finished deletion step's summary, in order."""
        return [step.summary(mode, forget_classes) for step in self.steps]

    def deletion_entries(self, nodes: list[int]) -> dict[str, object]:
        """Config entries of the deletion's messages: its round and the requests carried out."""
        named = {str(n): self.filed[n][0] for n in nodes if n in self.filed}
        requests = {P.REQUESTS: json.dumps(named)} if named else {}
        return {**requests, P.SERVER_ROUND: self.record.round}

    def deletion_mode(self, nodes: list[int]) -> str:
        """The configured mode; for node-side requests, ``class`` when every one names classes."""
        if self.mode != "requests":
            return self.mode
        return "class" if self.deletion_classes(nodes) else "random"

    def deletion_classes(self, nodes: list[int]) -> tuple[int, ...]:
        """The forgotten classes: configured, or named by every one of the nodes' requests."""
        if self.mode != "requests":
            return self.forget_classes
        filed = [self.filed.get(n, ([], []))[1] for n in nodes]
        if not filed or not all(filed):
            return ()
        return tuple(sorted({c for classes in filed for c in classes}))


def _told(entry: dict) -> tuple[int, int, str]:
    """A request entry's client, node and what it asked for, for Flower's log."""
    what = f"requests {entry['requests']}" if entry["requests"] else "its deletion"
    return entry["client"], entry["node"], what
