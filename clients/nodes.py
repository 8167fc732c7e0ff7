"""What a ClientApp node holds: its data, its deletion requests and what became of them.

Two kinds of node answer the same questions, so the message handlers never ask which one
they serve:

- :class:`SimulatedNode` -- a simulated client: its slice of the configured federation
  (``node_config["partition-id"]``) and the deletion the configuration plans for it; whether
  it was carried out lives in ``Context.state`` (one slot per ``fedforget compare`` branch).
- :class:`DirectoryNode` -- a real SuperNode with ``node_config["node-dir"]``: its own
  ``data.npz`` and the deletion requests its user filed there
  (:mod:`fedforget.node`); what was carried out is in the directory's ledger, durable across
  runs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
from flwr.app import ConfigRecord, Context, Message

from fedforget import protocol as P
from fedforget.clients.policy import NodePolicy
from fedforget.config import SimulationConfig
from fedforget.data import ArrayDataset, build_federation
from fedforget.node import DeletionRequest, NodeDirectory, RequestError
from fedforget.verification import VerificationTask, client_task

STATE_KEY = "fedforget"
NODE_DIR = "node-dir"


@dataclass(frozen=True)
class Pending:
    """The deletion this node asks for now (``count`` 0: none)."""

    count: int
    requests: tuple[str, ...] = ()
    classes: tuple[int, ...] = ()


class LocalNode(ABC):
    """One node's view of its data and deletions."""

    def __init__(self, config: SimulationConfig, context: Context, message: Message) -> None:
        self.config = config
        self.context = context
        self.message = message
        self.partition_id = int(context.node_config.get(P.PARTITION_ID, context.node_id))
        self.policy = NodePolicy.from_node(context.node_config)

    @property
    def state_key(self) -> str:
        """This node's slot in ``Context.state`` (one per ``fedforget compare`` branch)."""
        branch = str(self.message.content[P.CONFIG].get(P.BRANCH, ""))
        return f"{STATE_KEY}:{branch}" if branch else STATE_KEY

    @abstractmethod
    def training_data(self) -> tuple[ArrayDataset, np.ndarray]:
        """What the node trains on now, and the samples' ids."""

    @abstractmethod
    def retained_data(self) -> ArrayDataset:
        """The data the node keeps: nothing deleted or awaiting deletion."""

    @abstractmethod
    def deleted_mask(self, ids: np.ndarray) -> np.ndarray:
        """Which of these sample ids were asked to be deleted (pending or carried out)."""

    @abstractmethod
    def pending(self, server_round: int) -> Pending:
        """The deletion this node asks for in ``server_round``."""

    @abstractmethod
    def forget_data(self, requests: list[str]) -> ArrayDataset:
        """D_f of this node: the samples of the pending deletion (``requests``, if named)."""

    @abstractmethod
    def deleted_data(self) -> ArrayDataset:
        """The samples whose deletion was carried out (the node keeps them; nobody trains)."""

    @abstractmethod
    def carry_out(self, requests: list[str], server_round: int) -> int:
        """Drop the deleted samples for good; returns how many."""

    @abstractmethod
    def deletion_done(self) -> bool:
        """Whether a deletion of this node was carried out."""

    @abstractmethod
    def verification_task(self, model, reference, reference_name: str) -> VerificationTask:
        """What this node's user verifies with (see :mod:`fedforget.verification`)."""


class SimulatedNode(LocalNode):
    """A simulated client of the configured federation (see the module docstring)."""

    def __init__(self, config: SimulationConfig, context: Context, message: Message) -> None:
        super().__init__(config, context, message)
        self.policy.check_data_paths(config)  # before reading or downloading anything
        self.federation = build_federation(config)

    @property
    def _forget_indices(self) -> np.ndarray:
        return self.federation.client_forget_indices(self.partition_id)

    def training_data(self) -> tuple[ArrayDataset, np.ndarray]:
        return self.federation.client_data(self.partition_id, drop_deleted=self.deletion_done())

    def retained_data(self) -> ArrayDataset:
        return self.federation.client_data(self.partition_id, drop_deleted=True)[0]

    def deleted_mask(self, ids: np.ndarray) -> np.ndarray:
        return self.federation.is_deleted(ids)

    def pending(self, server_round: int) -> Pending:
        arrived = server_round >= self.config.deletion_round_of(self.partition_id)
        if not (len(self._forget_indices) and arrived and not self.deletion_done()):
            return Pending(0)
        return Pending(len(self._forget_indices))

    def forget_data(self, requests: list[str]) -> ArrayDataset:
        indices = self._forget_indices[:0] if self.deletion_done() else self._forget_indices
        return self.federation.train.subset(indices)

    def deleted_data(self) -> ArrayDataset:
        indices = self._forget_indices if self.deletion_done() else self._forget_indices[:0]
        return self.federation.train.subset(indices)

    def carry_out(self, requests: list[str], server_round: int) -> int:
        self.context.state[self.state_key] = ConfigRecord({P.DELETION_DONE: True})
        return len(self._forget_indices)

    def deletion_done(self) -> bool:
        record = self.context.state.get(self.state_key)
        return bool(record is not None and record.get(P.DELETION_DONE, False))

    def verification_task(self, model, reference, reference_name: str) -> VerificationTask:
        return client_task(
            self.federation, self.config, self.partition_id, model, reference, reference_name
        )


class DirectoryNode(LocalNode):
    """A real node with its own data and request files (see the module docstring)."""

    def __init__(self, config: SimulationConfig, context: Context, message: Message) -> None:
        super().__init__(config, context, message)
        self.directory = NodeDirectory(str(context.node_config[NODE_DIR]))
        self._pending: list[DeletionRequest] | None = None

    def _requests(self) -> list[DeletionRequest]:
        if self._pending is None:
            self._pending = self.directory.pending()
        return self._pending

    def _pending_ids(self) -> np.ndarray:
        return np.array([s for r in self._requests() for s in r.samples], dtype=np.int64)

    def training_data(self) -> tuple[ArrayDataset, np.ndarray]:
        self._requests()  # a requests folder the node cannot read stops it before it trains
        return self.directory.local_data()

    def retained_data(self) -> ArrayDataset:
        return self.directory.local_data(drop=self._pending_ids())[0]

    def deleted_mask(self, ids: np.ndarray) -> np.ndarray:
        asked = np.union1d(self.directory.deleted_ids(), self._pending_ids())
        return np.isin(ids, asked)

    def pending(self, server_round: int) -> Pending:
        requests = self._requests() if server_round >= self.config.deletion.rounds[0] else []
        if not requests:
            return Pending(0)
        classes = () if any(not r.classes for r in requests) else _union(requests)
        ids = tuple(r.id for r in requests)
        return Pending(len(set(self._pending_ids().tolist())), ids, classes)

    def _named(self, requests: list[str]) -> list[DeletionRequest]:
        return [r for r in self._requests() if not requests or r.id in requests]

    def forget_data(self, requests: list[str]) -> ArrayDataset:
        return self.directory.forget_data(self._named(requests))

    def deleted_data(self) -> ArrayDataset:
        return self.directory.data.subset(self.directory.deleted_ids())

    def carry_out(self, requests: list[str], server_round: int) -> int:
        """Record the named requests; a request the node neither holds nor recorded is an error.

        The reply to ``query.deletion_complete`` is the server's confirmation that the node
        recorded the deletion, so it must never succeed for a request the ledger lacks.
        """
        known = {r.id for r in self._requests()} | {e["id"] for e in self.directory.ledger()}
        unknown = sorted(set(requests) - known)
        if unknown:
            raise RequestError(f"request {unknown[0]} is neither pending nor carried out here")
        return self.directory.carry_out(
            self._named(requests), server_round, self.message.metadata.run_id
        )

    def deletion_done(self) -> bool:
        return bool(self.directory.ledger())

    def verification_task(self, model, reference, reference_name: str) -> VerificationTask:
        ledger = self.directory.ledger()
        deleted = self.directory.deleted_ids()
        classes = () if any(not e["classes"] for e in ledger) else _union_entries(ledger)
        return VerificationTask(
            model=model,
            reference=reference,
            reference_name=reference_name,
            num_classes=int(self.message.content[P.CONFIG][P.NUM_CLASSES]),
            local_data=self.directory.local_data()[0],
            forget=self.directory.data.subset(deleted),
            forgotten_classes=classes,
        )


def _union(requests: list[DeletionRequest]) -> tuple[int, ...]:
    return tuple(sorted({c for r in requests for c in r.classes}))


def _union_entries(entries: list[dict]) -> tuple[int, ...]:
    return tuple(sorted({int(c) for e in entries for c in e["classes"]}))


def node_for(config: SimulationConfig, context: Context, message: Message) -> LocalNode:
    """The node kind named by ``node_config``: ``node-dir`` for a real node, else simulated."""
    if NODE_DIR in context.node_config:
        return DirectoryNode(config, context, message)
    return SimulatedNode(config, context, message)
