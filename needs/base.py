"""The data-need extension point: what a method needs from the clients, met the federated way.

An :class:`~fedforget.unlearning.Unlearner` declares the data it needs by name
(:attr:`~fedforget.unlearning.Unlearner.needs`). Each name is a :class:`Need`, registered
here, that holds everything about meeting it:

- the server's gathering step at a deletion (:meth:`Need.gather`): the messages it sends, the
  fields of the :class:`~fedforget.unlearning.UnlearningRequest` (or context) it fills, and
  the figures it records (``summary.json``: ``deletion.needs.<name>``);
- for needs that make the clients work during FedAvg training (a GAN trained alongside, a
  method's training-time hook): the round's messages and the replies' aggregation on the
  server (:meth:`Need.round_messages`, :meth:`Need.note_round`), and on the client
  (:meth:`Need.client_training`) the work next to the local training;
- the client's handlers of the need's own messages (:meth:`Need.client_handlers`) and what a
  client drops when its deletion is carried out (:meth:`Need.client_deletion`).

The strategy and the ClientApp only iterate over the needs: neither names a method. The
client half sees its node through :class:`ClientView` (implemented by the ClientApp), so
that a need module imports nothing from ``fedforget.clients`` and the client never imports
server code. A need instance is made per strategy (it may hold state: the kept client
updates, the federation's GAN, the seconds clients spent); its client half is stateless (a
client keeps state in ``Context.state`` through the view).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict

from fedforget.config import SimulationConfig
from fedforget.data.modes import DeletionMode
from fedforget.data.sources import ArrayDataset
from fedforget.federated import State
from fedforget.registry import Registry, UnknownNameError
from fedforget.training import StepHook

if TYPE_CHECKING:
    import torch

    from fedforget.report import RunObserver
    from fedforget.strategies.ledger import DeletionLedger
    from fedforget.strategies.messaging import NodeMessenger
    from fedforget.strategies.settings import StrategySettings
    from fedforget.unlearning import Unlearner

ClientHandler = Callable[["ClientView"], Message]
"""A need's client handler: answers the message the view holds."""


class UnknownNeedError(UnknownNameError):
    """A data need that is not registered."""


# ---------------------------------------------------------------------- server side
@dataclass
class ServerParts:
    """What a need's server half works with (the strategy's parts)."""

    settings: StrategySettings
    messenger: NodeMessenger
    ledger: DeletionLedger
    make_config: Callable[..., ConfigRecord]
    observer: RunObserver
    build_gan: Callable[[], Any] | None = None


@dataclass
class GatherStep:
    """A deletion step as a need's gathering sees it.

    Attributes
    ----------
    grid : Grid
        Flower's grid of the run.
    nodes : list of int
        The deleting nodes the step carries out (the ``forget`` need narrows them to the
        nodes that sent their D_f: the others keep their request for a later round).
    mode : DeletionMode
        The mode the requests amount to (:meth:`DeletionLedger.deletion_mode`).
    forget_classes : tuple of int
        The forgotten classes (class deletions).
    leaving : tuple of int
        Partition ids of the clients that leave the federation.
    unlearners : list of Unlearner
        The methods served (one; several in ``compare``'s base).
    """

    grid: Any
    nodes: list[int]
    mode: DeletionMode
    forget_classes: tuple[int, ...]
    leaving: tuple[int, ...]
    unlearners: list[Unlearner] = field(default_factory=list)


@dataclass
class Gathered:
    """What a need's gathering produced.

    Attributes
    ----------
    request : dict
        Fields of the :class:`~fedforget.unlearning.UnlearningRequest` (a dict-valued field,
        such as ``client_state``, merges with the other needs').
    context : dict
        Fields of the :class:`~fedforget.unlearning.UnlearningContext`.
    nodes : list of int or None
        The nodes the step goes on with, when the need narrowed them.
    bytes_from_clients : int
        Data the clients sent for the step outside its messages (D_f that came with the
        requests): part of the step's traffic.
    """

    request: dict[str, Any] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)
    nodes: list[int] | None = None
    bytes_from_clients: int = 0


# ---------------------------------------------------------------------- client side
class ClientView(Protocol):
    """A node as a need's client half sees it (the ClientApp implements it)."""

    message: Message
    config: SimulationConfig
    partition_id: int

    @property
    def device(self) -> torch.device:
        """Where the client computes."""

    @property
    def num_classes(self) -> int:
        """Classes of the federation's model (from the message)."""

    @property
    def round_seed(self) -> int:
        """The message's seed for this client (batch orders)."""

    def training_data(self) -> tuple[ArrayDataset, np.ndarray]:
        """The data the node trains on now and the ids of its samples."""

    def retained_data(self) -> ArrayDataset:
        """The node's data without any sample it deletes."""

    def deleted_mask(self, ids: np.ndarray) -> np.ndarray:
        """Which of these sample ids the node deletes (pending or carried out)."""

    def forget_data(self) -> ArrayDataset:
        """D_f of the requests the message names (all pending ones when it names none)."""

    def reply(self, records: dict[str, Any], metrics: dict[str, float | int]) -> Message:
        """A reply with ``records`` and the metrics (the partition id added)."""

    def data_reply(self, data: ArrayDataset) -> Message:
        """A reply carrying samples (``x``, ``y``) and their count."""

    def train_as_told(self) -> Message:
        """Local training as the message's config says (epochs, lr, proximal term, samples)."""

    def kept(self, name: str) -> tuple[State, str] | None:
        """Arrays kept under ``name`` and their owner (this branch's, else the base run's)."""

    def keep(self, name: str, arrays: State, owner: str) -> None:
        """Keep ``arrays`` under ``name`` in this node's (branch's) slot."""

    def unlearner(self, name: str) -> Unlearner:
        """The run's unlearner ``name`` with its configured options."""


@dataclass
class ClientWork:
    """What a need adds to a client's local training.

    Attributes
    ----------
    hook : StepHook or None
        Called after each local step (a method's training-time hook).
    finish : Callable
        ``finish(model) -> (records, metrics, deleted passes)``, once the local training
        ended: records for the reply, metric entries (every reply of a round carries the
        same keys), extra passes over deleted samples.
    """

    hook: StepHook | None = None
    finish: Callable[[Any], tuple[dict[str, Any], dict[str, float], int]] = field(
        default=lambda model: ({}, {}, 0)
    )


# ---------------------------------------------------------------------- the need
class Need:
    """Base class of every data need (see the module docstring).

    Subclasses set ``name`` and ``summary`` and override what they take part in; a need
    that trains on the clients during FedAvg sets ``trains``.

    Parameters
    ----------
    parts : ServerParts
        The strategy's parts (settings, messenger, ledger, message configs, observer).
    """

    name: ClassVar[str]
    summary: ClassVar[str] = ""
    order: ClassVar[int] = 100
    """Needs are gathered in this order (a need sees the nodes an earlier one narrowed)."""
    trains: ClassVar[bool] = False
    """The clients work for this need during FedAvg training (the round's messages say so)."""
    completes_first: ClassVar[bool] = False
    """The clients must have dropped D_f before the unlearner runs (it trains on them)."""
    rides_on_requests: ClassVar[bool] = False
    """The clients send the need's data with their request, in the reply that reports it
    (when the server unlearns): the step then needs no round trip for it."""

    def __init__(self, parts: ServerParts) -> None:
        self.parts = parts
        self.step_figures: dict[str, float] = {}
        """The figures of the latest deletion step (reset by each :meth:`gather`)."""

    # ------------------------------------------------------------------ server: training
    def round_entries(self, unlearners: Iterable[Unlearner]) -> dict[str, str]:
        """Config entries of a FedAvg round's training messages (the client half reads them)."""
        return {}

    def round_messages(
        self, record: RecordDict, nodes: list[int], rng: random.Random, message_type: str
    ) -> list[Message] | None:
        """The round's training messages, when the need shapes them (``None``: it does not)."""
        return None

    def note_round(
        self, phase: str, server_round: int, start: ArrayRecord, replies: list[Message]
    ) -> None:
        """A FedAvg round's good replies (before FedAvg aggregates them)."""

    def training_figures(self) -> dict[str, float]:
        """Figures of the need's work during training so far (added to every step's)."""
        return {}

    def figures(self) -> dict[str, float]:
        """Everything the need recorded: its training so far and the latest step."""
        return {**self.training_figures(), **self.step_figures}

    def take_over(self, parent: Need) -> None:
        """Continue from ``parent``'s state (a ``compare`` branch from the base run)."""

    # ------------------------------------------------------------------ server: deletion
    def gather(self, step: GatherStep) -> Gathered:
        """Meet the need for this deletion step (messages, request fields); the figures go
        to :attr:`step_figures` (some are counted later, while the unlearner runs)."""
        self.step_figures = {}
        return Gathered()

    def deletion_config(self, nodes: list[int], **extra: object) -> ConfigRecord:
        """The config of a deletion message to ``nodes``: its round and their requests."""
        return self.parts.make_config(**self.parts.ledger.deletion_entries(nodes), **extra)

    # ------------------------------------------------------------------ client
    @classmethod
    def client_handlers(cls) -> dict[str, ClientHandler]:
        """Message type -> the client's handler of the need's own messages."""
        return {}

    @classmethod
    def client_training(cls, view: ClientView, entries: dict[str, str]) -> ClientWork | None:
        """The client's work next to its local training (``entries``: the round's)."""
        return None

    @classmethod
    def client_deletion(cls, view: ClientView) -> None:
        """The client carries out its deletion: drop what was made from the deleted data."""


NEEDS: Registry[type[Need]] = Registry("data need", error=UnknownNeedError)
register_need = NEEDS.register
"""Class decorator: register a need under its ``name``."""


def need_names() -> list[str]:
    """The registered needs, in their order of gathering."""
    return ordered(NEEDS)


def ordered(names: Iterable[str]) -> list[str]:
    """``names`` in the needs' order of gathering (an unknown name is a one-line error)."""
    return sorted(set(names), key=lambda name: (NEEDS.lookup(name).order, name))
