"""The unlearner extension point: one interface, one registry.

An unlearner turns the current global model into one that has forgotten a request's data.
It declares what it needs (:attr:`Unlearner.needs`) and the Flower strategy provides exactly
that, the federated way; the core never reaches into a client:

``forget``
    D_f, sent by the deleting clients (``query.forget_data``), as paper 000's server receives it.
``retain``
    a sample of retained data, at most ``retain_per_client`` samples sent by each client
    (``query.retain_data``); a privacy cost that the run records (``retain_samples``).
``history``
    the per-round client updates the server kept during training (FedEraser); their storage
    is recorded (``history_bytes``).
``generator``
    the class-conditional GAN the clients trained alongside the classifier and the server
    averaged (MuGAN, paper 002 section 3.2); no real sample reaches the server.
``synthetic``
    the small synthetic sets the clients distilled from their data during training
    (QuickDrop): the server asks for them at the deletion (``query.synthetic``) and splits
    them into the part to forget and the rest; their size is recorded (``synthetic_bytes``),
    and the distillation's client compute during training (``distillation_client_seconds``).
``auxiliary``
    the auxiliary heads that the deleting clients trained during learning (FedAU): the server
    asks for them at the deletion (``query.auxiliary``); their size is recorded
    (``auxiliary_bytes``), and their client compute during training
    (``auxiliary_client_seconds``).
``rounds``
    training run *on the clients* (:attr:`UnlearningContext.federated_train`): the server sends
    weights, every remaining client trains them on its retained data and sends them back.

Every unlearner has a pydantic ``Settings`` model: options are validated once, and a bad
option is a :class:`fedforget.config.ConfigError` with one line.

Some methods are defined for some deletion modes only (FedEraser-style client removal, a
GAN that draws classes): :attr:`Unlearner.modes` says which, so that a harness can state the
refusal before anything runs, and :meth:`Unlearner.check_mode` refuses the others with a
one-line :class:`~fedforget.config.ConfigError`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict

from fedforget.config import ConfigError, validated_options
from fedforget.data.sources import ArrayDataset
from fedforget.federated import ClientUpdate, HistoryRound, State
from fedforget.gan.networks import ConditionalGan
from fedforget.models import ClassifierModel, missing_parts
from fedforget.registry import Registry, UnknownNameError

DataNeed = Literal["forget", "retain", "history", "rounds", "generator", "synthetic", "auxiliary"]
DeletionMode = Literal["backdoor", "random", "class", "client"]
ALL_MODES: frozenset[str] = frozenset({"backdoor", "random", "class", "client"})
ProgressFn = Callable[[str, int, int, dict[str, float]], None]
FederatedTrainFn = Callable[[State, int, float], list[ClientUpdate]]
"""``(weights, epochs, lr) -> updated weights of every remaining client`` (trained on D_r)."""


class UnknownUnlearnerError(UnknownNameError):
    """An unlearner name that is not registered."""


@dataclass(frozen=True)
class UnlearningRequest:
    """What is to be forgotten and the data the unlearner was given.

    Attributes
    ----------
    forget : ArrayDataset
        D_f as gathered from the deleting clients (triggered and relabelled in backdoor mode).
    num_classes : int
        Number of output classes.
    mode : str
        Deletion mode: ``backdoor``, ``random``, ``class`` or ``client``.
    forget_classes : tuple[int, ...]
        Forgotten classes in class mode.
    retain : ArrayDataset | None
        A retained subset, for methods that declare the ``retain`` need.
    history : tuple[HistoryRound, ...]
        The stored rounds up to the request, for methods that declare ``history``.
    leaving_clients : tuple[int, ...]
        Partition ids of clients that leave the federation (``client`` mode): their stored
        updates must be dropped.
    generator : ConditionalGan | None
        The federation's class-conditional GAN, for methods that declare ``generator``.
    validation : ArrayDataset | None
        A held-out set the experimenter declares to the server (no client's data): methods
        that forget natural data (``random``, ``client``) measure there what "unseen" looks
        like (distill's deletion-aware target).
    synthetic_forget, synthetic_retain : ArrayDataset | None
        The clients' distilled synthetic images, split into the part standing for the
        deleted data and the rest (the ``synthetic`` need, QuickDrop).
    auxiliary_heads : tuple of State
        The deleting clients' auxiliary heads (``weight``, ``bias``), trained during
        learning (the ``auxiliary`` need, FedAU).
    """

    forget: ArrayDataset
    num_classes: int
    mode: str = "backdoor"
    forget_classes: tuple[int, ...] = ()
    retain: ArrayDataset | None = None
    history: tuple[HistoryRound, ...] = ()
    leaving_clients: tuple[int, ...] = ()
    generator: ConditionalGan | None = None
    validation: ArrayDataset | None = None
    synthetic_forget: ArrayDataset | None = None
    synthetic_retain: ArrayDataset | None = None
    auxiliary_heads: tuple[State, ...] = ()


@dataclass
class UnlearningContext:
    """Everything besides the data: initial weights, device, seed and a progress callback.

    Attributes
    ----------
    initial_state : dict[str, np.ndarray]
        The weights the federation started from (w_0), e.g. paper 000's incompetent teacher.
    build_model : Callable[[], ClassifierModel]
        Makes a fresh model of the federation's architecture.
    device : torch.device
        Where to compute.
    seed : int
        Seed for batch order and any randomness.
    progress : ProgressFn | None
        Called as ``progress(phase, step, total, metrics)``.
    federated_train : FederatedTrainFn | None
        Runs local training on every remaining client (the ``rounds`` need).
    local_epochs, local_lr : int, float
        The federation's local training settings (for methods that replay rounds).
    """

    initial_state: State
    build_model: Callable[[], ClassifierModel]
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0
    progress: ProgressFn | None = None
    federated_train: FederatedTrainFn | None = None
    local_epochs: int = 1
    local_lr: float = 0.05

    def report(self, phase: str, step: int, total: int, **metrics: float) -> None:
        """Forward a progress event when a callback is set."""
        if self.progress is not None:
            self.progress(phase, step, total, metrics)


class UnlearnerSettings(BaseModel):
    """Base of every unlearner's options (unknown options are errors)."""

    model_config = ConfigDict(extra="forbid")


class Unlearner(ABC):
    """Base class of every unlearning method.

    Subclasses set ``name``, ``needs``, a ``Settings`` model and implement :meth:`unlearn`;
    ``uses_relay`` says whether the method includes paper 000's recovery relay; ``modes``
    lists the deletion modes the method is defined for (``mode_reason`` says why, for the
    refusal of the others).
    """

    name: ClassVar[str]
    needs: ClassVar[frozenset[DataNeed]] = frozenset({"forget"})
    modes: ClassVar[frozenset[str]] = ALL_MODES
    mode_reason: ClassVar[str] = ""
    uses_relay: ClassVar[bool] = False
    model_needs: ClassVar[frozenset[str]] = frozenset()
    """Parts of :class:`~fedforget.models.ClassifierModel` the method uses beyond
    ``model(x)`` (``head``, ``embed``, ``forward_features``); a plain ``nn.Module`` serves
    the methods that need none."""
    Settings: ClassVar[type[BaseModel]] = UnlearnerSettings

    def check_model(self, model: torch.nn.Module) -> None:
        """Refuse, with a one-line :class:`ConfigError`, a model without :attr:`model_needs`."""
        missing = missing_parts(model, self.model_needs)
        if missing:
            raise ConfigError(
                f"{self.name} needs a model with {', '.join(missing)} (a fedforget "
                f"ClassifierModel, docs/models.md); {type(model).__name__} has none"
            )

    def __init__(self, **options: Any) -> None:
        self.settings = validated_options(self.name, self.Settings, options)

    @classmethod
    def refusal(cls, mode: str) -> str | None:
        """Why this method does not carry out a ``mode`` deletion (``None``: it does)."""
        if mode in cls.modes:
            return None
        allowed = ", ".join(sorted(cls.modes))
        why = f" ({cls.mode_reason})" if cls.mode_reason else ""
        return f"{cls.name} supports only mode(s) {allowed}{why}; got mode '{mode}'"

    def check_mode(self, request: UnlearningRequest) -> None:
        """Refuse, with a one-line :class:`ConfigError`, a mode outside :attr:`modes`."""
        reason = self.refusal(request.mode)
        if reason is not None:
            raise ConfigError(reason)

    def require_retained(self, request: UnlearningRequest) -> None:
        """Raise unless ``request`` carries a non-empty retained sample (the ``retain`` need)."""
        if request.retain is None or len(request.retain) == 0:
            raise ValueError(f"{self.name} needs a retained sample (the 'retain' need)")

    def require_client_training(self, context: UnlearningContext) -> FederatedTrainFn:
        """The context's training on the clients (the ``rounds`` need), or an error."""
        if context.federated_train is None:
            raise ValueError(f"{self.name} needs training rounds on the clients (federated_train)")
        return context.federated_train

    @abstractmethod
    def unlearn(
        self, model: ClassifierModel, request: UnlearningRequest, context: UnlearningContext
    ) -> ClassifierModel:
        """Return the unlearned model (may modify ``model`` in place)."""

    def adjust_update(self, before: State, aggregated: State) -> State:
        """Post-training hook: every FedAvg aggregate after the deletion passes through it.

        ``before`` is the global model the round started from, ``aggregated`` the FedAvg
        result. The default keeps the aggregate; a method whose later rounds must not revert
        the unlearning (FedOSD) changes it.
        """
        return aggregated

    @property
    def adjusts_updates(self) -> bool:
        """Whether :meth:`adjust_update` is overridden (the strategy skips the hook if not)."""
        return type(self).adjust_update is not Unlearner.adjust_update


@torch.no_grad()
def batch_accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Accuracy of ``model`` on tensors ``(x, y)`` in eval mode; restores the model's mode."""
    if len(x) == 0:
        return 0.0
    was_training = model.training
    model.eval()
    accuracy = float((model(x).argmax(dim=1) == y).float().mean())
    model.train(was_training)
    return accuracy


def accuracies(
    model: torch.nn.Module, probes: dict[str, tuple[torch.Tensor, torch.Tensor]]
) -> dict[str, float]:
    """:func:`batch_accuracy` of ``model`` on each named probe ``(x, y)``, in order."""
    return {name: batch_accuracy(model, x, y) for name, (x, y) in probes.items()}


UNLEARNER_REGISTRY: Registry[type[Unlearner]] = Registry("unlearner", error=UnknownUnlearnerError)
register_unlearner = UNLEARNER_REGISTRY.register
"""Class decorator: register an unlearner under its ``name``."""
unlearner_names = UNLEARNER_REGISTRY.names


def build_unlearner(name: str, **options: object) -> Unlearner:
    """Instantiate a registered unlearner."""
    return UNLEARNER_REGISTRY.lookup(name)(**options)
