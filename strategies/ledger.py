"""The deletion ledger: pending requests, what each node is, and the record of each step.

The clients report their deletion requests in their training replies
(:data:`~fedforget.protocol.DELETION_PENDING`, and for node-side requests the request ids and
classes); :class:`DeletionLedger` notes them, together with the sample passes over deleted
data (:class:`Bookkeeping`) and each node's partition id, until the strategy carries them out.

A deletion step is opened (:meth:`DeletionLedger.open_deletion`: its round, nodes and
requests), its parts run and each returns its figures (the unlearning's and the relay's
seconds, the relay's trace, every data need's figures), and the step is closed
(:meth:`DeletionLedger.close_deletion`): the one place where the step's record, a
:class:`~fedforget.report.summary.DeletionSummary`, is assembled. The run summary shows that
record as it is.

A run may carry out several deletion steps (sequential requests). :attr:`DeletionLedger.record`
describes the latest step, with the ``requests`` and ``faults`` of every step so far (what a
single-step run always reported), and :attr:`DeletionLedger.steps` keeps each step's record
with its own requests and faults only.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from logging import INFO, WARN
from typing import Any

from flwr.app import Message
from flwr.common.logger import log

from fedforget import protocol as P
from fedforget.data.modes import DeletionMode, deletion_mode
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


@dataclass
class StepFigures:
    """What the parts of one deletion step measured, handed to :meth:`close_deletion`.

    Attributes
    ----------
    unlearning_seconds, recovery_seconds : float
        Wall seconds of the unlearning and of the recovery relay.
    relay : dict
        The relay's figures (``relay_*`` fields of the record; empty without a relay).
    needs : dict
        Per data need: the figures it recorded (gathering and training).
    extra_bytes_from_clients : int
        Data the clients sent for the step outside its messages (D_f with the requests).
    """

    unlearning_seconds: float = 0.0
    recovery_seconds: float = 0.0
    relay: dict[str, Any] = field(default_factory=dict)
    needs: dict[str, dict[str, float]] = field(default_factory=dict)
    extra_bytes_from_clients: int = 0
    """Data the clients sent for the step outside its messages (D_f with the requests)."""
    validation_accuracy_before: float | None = None
    """The model's accuracy on the declared validation set before the step (none: no set)."""
    validation_chance: float | None = None
    """The validation set's chance level (its most frequent class's share)."""
    skipped: str | None = None
    """Why the step ran no unlearning and no relay (``untrained``), else ``None``."""


@dataclass
class OpenStep:
    """The deletion step under way: its round, nodes and what their requests sent along."""

    round: int
    nodes: list[int]
    clients: list[int]
    forget_samples: int
    faults_before: int


class DeletionLedger:
    """Pending deletion requests and the records of the deletion steps that carry them out.

    Parameters
    ----------
    mode : str or DeletionMode
        The configured deletion mode; node-side modes take mode and classes from what the
        nodes filed (:meth:`DeletionMode.resolve`).
    forget_classes : tuple of int
        The configured forgotten classes (``class`` mode).
    """

    def __init__(self, mode: str | DeletionMode, forget_classes: tuple[int, ...]) -> None:
        self.mode = deletion_mode(mode)
        self.forget_classes = tuple(forget_classes)
        self.bookkeeping = Bookkeeping()
        self.partition_of: dict[int, int] = {}
        self.pending: dict[int, int] = {}  # node id -> samples to delete
        self.filed: dict[int, RequestsFiled] = {}  # node-side requests
        self.forget_sent: dict[int, ArrayDataset] = {}
        """D_f that nodes sent with their request (``attach-forget``), until it is used."""
        self.compute_seconds = 0.0  # client compute since the last reset (one FedAvg round)
        self.requests: list[dict[str, Any]] = []  # every step's requests
        self.faults: list[dict[str, Any]] = []  # every node failure so far
        self.steps: list[DeletionSummary] = []  # each finished deletion step, in order
        self.current: OpenStep | None = None
        self.record = DeletionSummary(mode=self.mode.name, forget_classes=list(forget_classes))
        """The latest finished step (an empty record before the first)."""

    def client_of(self, node: int) -> int:
        """The partition id of ``node`` (``-1`` before it first replied)."""
        return self.partition_of.get(node, -1)

    def record_fault(self, fault: dict) -> None:
        """Keep a node's failure (every record lists the faults so far)."""
        self.faults.append(fault)
        self.record.faults = list(self.faults)

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
        """Open this round's step for the pending requests; returns their nodes."""
        nodes = sorted(self.pending)
        for node in nodes:
            ids, classes = self.filed.get(node, ([], list(self.forget_classes)))
            self.requests.append(
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
        self.current = OpenStep(
            round=server_round,
            nodes=nodes,
            clients=sorted(self.client_of(n) for n in nodes),
            forget_samples=sum(self.pending.values()),
            faults_before=len(self.faults),
        )
        self.pending.clear()
        return nodes

    def confirm_deletion(self, confirmed: Iterable[int], riding: Iterable[int] = ()) -> None:
        """Set the status of this step's requests from the nodes that confirmed them.

        ``confirmed`` are the nodes whose reply to ``query.deletion_complete`` arrived;
        ``riding`` those whose drop order rides on their next message (confirmed by
        :meth:`confirm_orders` when its reply comes); every other request of the step stays
        ``pending`` with the node's latest fault of the step. A confirmation also settles the
        same client's earlier unconfirmed entries for these requests (``confirmed_later``,
        with ``confirmed_round``).
        """
        step = self.current
        if step is None:
            return
        confirmed, riding = set(confirmed), set(riding)
        step_faults = self.faults[step.faults_before :]
        for entry in (e for e in self.requests if e["round"] == step.round):
            if entry.get("status") == CONFIRMED:
                continue
            if entry["node"] in confirmed:
                self._confirm(entry)
                continue
            if entry["node"] in riding:
                log(INFO, "deletion:   client %d (node %d): the order to drop %s rides on "
                    "its next message", *_told(entry))  # fmt: skip
                continue
            self._unconfirmed(entry, step_faults)

    def _unconfirmed(self, entry: dict, faults: list[dict[str, Any]]) -> None:
        """``entry`` stays pending, with its node's latest of ``faults``."""
        of_node = [f for f in faults if f["node"] == entry["node"]]
        entry["fault"] = of_node[-1] if of_node else None
        log(
            WARN,
            "deletion:   client %d (node %d) did not confirm %s: pending on the node, "
            "carried out when it reports it again",
            *_told(entry),
        )

    def confirm_orders(self, nodes: Iterable[int], confirmed: bool = True) -> None:
        """These nodes carried out the drop order that rode on a message: the requests of
        each one's latest step are confirmed (earlier ones they cover settled), in the latest
        record too. ``confirmed=False``: no message took the order to them (they failed);
        those requests stay pending, with the node's latest fault."""
        for node in set(nodes):
            entries = [e for e in self.requests if e["node"] == node]
            if not entries or entries[-1].get("status") != PENDING:
                continue
            if confirmed:
                self._confirm(entries[-1])
            else:
                self._unconfirmed(entries[-1], self.faults)
        if self.record.round is not None:
            self.record.requests = list(self.requests)

    def _confirm(self, entry: dict) -> None:
        entry["status"] = CONFIRMED
        entry.pop("fault", None)
        self._settle_earlier(entry)
        log(INFO, "deletion:   client %d (node %d) confirmed %s", *_told(entry))

    def _settle_earlier(self, entry: dict) -> None:
        for earlier in self.requests:
            if (
                earlier["round"] < entry["round"]
                and earlier.get("status") == PENDING
                and earlier["client"] == entry["client"]
                and set(earlier["requests"]) <= set(entry["requests"])
            ):
                earlier.update(status=CONFIRMED_LATER, confirmed_round=entry["round"])

    def close_deletion(self, figures: StepFigures, traffic: Traffic) -> DeletionSummary:
        """Assemble the step's record from its parts' ``figures`` and its messages' cost.

        ``bytes_from_clients`` includes what came outside the step's messages (D_f with the
        requests, in training or status replies); ``server_seconds`` is the step's wall time
        less the time it waited for replies.
        """
        step = self.current
        if step is None:
            raise RuntimeError("no deletion step is open")
        wall = figures.unlearning_seconds + figures.recovery_seconds
        record = DeletionSummary(
            mode=self.mode.name,
            round=step.round,
            clients=step.clients,
            nodes=step.nodes,
            forget_samples=step.forget_samples,
            forget_classes=list(self.forget_classes) or self._named_classes(),
            unlearning_seconds=figures.unlearning_seconds,
            recovery_seconds=figures.recovery_seconds,
            **figures.relay,
            needs=figures.needs,
            bytes_to_clients=traffic.bytes_to_clients,
            bytes_from_clients=traffic.bytes_from_clients + figures.extra_bytes_from_clients,
            client_compute_seconds=traffic.client_seconds,
            server_seconds=max(0.0, wall - traffic.waiting_seconds),
            round_trips=traffic.round_trips,
            validation_accuracy_before=figures.validation_accuracy_before,
            validation_chance=figures.validation_chance,
            skipped=figures.skipped,
            requests=list(self.requests),
            faults=list(self.faults),
        )
        own_requests = [r for r in self.requests if r["round"] == step.round]
        own_faults = self.faults[step.faults_before :]
        self.steps.append(
            record.model_copy(update={"requests": own_requests, "faults": own_faults})
        )
        self.record = record
        self.current = None
        return record

    def log_requests(self, server_round: int) -> None:
        """Flower's log: which clients asked for a deletion, how many samples, which requests."""
        step = self.current
        if step is None:
            return
        log(
            INFO,
            "deletion: requests after round %d from clients %s (%d samples)",
            server_round,
            step.clients,
            step.forget_samples,
        )
        for entry in self.requests:
            if entry["round"] == server_round:
                named = f", requests {entry['requests']}" if entry["requests"] else ""
                classes = f", classes {entry['classes']}" if entry["classes"] else ""
                client, node, samples = entry["client"], entry["node"], entry["samples"]
                log(
                    INFO,
                    "deletion:   client %d (node %d): %d samples%s%s",
                    client,
                    node,
                    samples,
                    classes,
                    named,
                )

    def note_node_forget_accuracy(
        self, found: Mapping[str, float], samples: int, step: int | None = None
    ) -> None:
        """The deleting nodes' own accuracy on their deleted samples, measured after a step
        (and at the run's end): added to step ``step``'s record (default: the latest, whose
        record is also :attr:`record`)."""
        latest = step is None or step == len(self.steps) - 1
        records = (self.record, *self.steps[-1:]) if latest else (self.steps[step],)
        for record in records:
            record.node_forget_accuracy.update(found)
            record.node_forget_samples = max(record.node_forget_samples, samples)

    def _named_classes(self) -> list[int]:
        """The classes the carried-out node-side requests named (for the record)."""
        return sorted({c for request in self.requests for c in request["classes"]})

    @property
    def step_round(self) -> int:
        """The round of the step under way (else of the latest step; 0 before any)."""
        if self.current is not None:
            return self.current.round
        return self.record.round or 0

    def deletion_entries(self, nodes: list[int]) -> dict[str, object]:
        """Config entries of the deletion's messages: its round and the requests carried out."""
        named = {str(n): self.filed[n][0] for n in nodes if n in self.filed}
        requests = {P.REQUESTS: json.dumps(named)} if named else {}
        return {**requests, P.SERVER_ROUND: self.step_round}

    def deletion_mode(self, nodes: list[int]) -> DeletionMode:
        """The mode the nodes' requests amount to (the configured one, or for node-side
        requests what they filed: a class deletion when every one names classes)."""
        return self.mode.resolve(bool(self._filed_classes(nodes)))

    def deletion_classes(self, nodes: list[int]) -> tuple[int, ...]:
        """The forgotten classes: configured, or named by every one of the nodes' requests."""
        if not self.mode.node_side:
            return self.forget_classes
        return self._filed_classes(nodes)

    def _filed_classes(self, nodes: list[int]) -> tuple[int, ...]:
        filed = [self.filed.get(n, ([], []))[1] for n in nodes]
        if not filed or not all(filed):
            return ()
        return tuple(sorted({c for classes in filed for c in classes}))


def _told(entry: dict) -> tuple[int, int, str]:
    """A request entry's client, node and what it asked for, for Flower's log."""
    what = f"requests {entry['requests']}" if entry["requests"] else "its deletion"
    return entry["client"], entry["node"], what
