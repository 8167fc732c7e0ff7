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
``synthetic``, ``auxiliary``
    what the clients' training-time hook of the method kept (QuickDrop's distilled sets, FedAU's
    auxiliary heads): a method with a client-side need declares the need's name as
    :attr:`Unlearner.hook_need` and implements :meth:`Unlearner.training_hook`; every FedAvg
    round's clients then run the hook while they train and keep what it returns, and the
    server asks them for it at the deletion (:attr:`UnlearningRequest.client_state`); the
    hook's client compute and the kept arrays' size are recorded.
``rounds``
    training run *on the clients* (:attr:`UnlearningContext.federated_train`): the server sends
    weights, every remaining client trains them on its retained data and sends them back.

The needs are plug-ins of the strategy layer (:mod:`fedforget.needs`): each holds the server's
gathering step, the client's handler and the figures it records, so that neither the
strategy nor the ClientApp names a method.

Every unlearner has a pydantic ``Settings`` model: options are validated once, and a bad
option is a :class:`fedforget.config.ConfigError` with one line.

Some methods are defined for some kinds of deletion only (FedEraser-style client removal, a
GAN that draws classes): :attr:`Unlearner.modes` says which :class:`~fedforget.data.modes.Kind`,
so that a harness can state the refusal before anything runs, and :meth:`Unlearner.check_mode`
refuses the others with a one-line :class:`~fedforget.config.ConfigError`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from fedforget.config import ConfigError, SimulationConfig, validated_options
from fedforget.data.modes import DeletionMode, Kind, deletion_mode
from fedforget.data.sources import ArrayDataset
from fedforget.federated import ClientUpdate, HistoryRound, State
from fedforget.gan.networks import ConditionalGan
from fedforget.models import ClassifierModel, missing_parts
from fedforget.registry import Registry, UnknownNameError

DataNeed = str
"""The name of a data need (registered in :mod:`fedforget.needs`)."""
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
    mode : DeletionMode
        The deletion's mode (a registered name is looked up); methods act on its ``kind``.
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
    client_state : Mapping[str, Mapping[int, State]]
        Per need: what each client's training-time hook kept, by partition id (the clients
        that kept nothing are left out): QuickDrop's synthetic sets, FedAU's heads.
    """

    forget: ArrayDataset
    num_classes: int
    mode: DeletionMode = "backdoor"  # type: ignore[assignment]  # a name is looked up
    forget_classes: tuple[int, ...] = ()
    retain: ArrayDataset | None = None
    history: tuple[HistoryRound, ...] = ()
    leaving_clients: tuple[int, ...] = ()
    generator: ConditionalGan | None = None
    validation: ArrayDataset | None = None
    client_state: Mapping[str, Mapping[int, State]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", deletion_mode(self.mode))

    @property
    def kind(self) -> Kind:
        """What kind of data is forgotten (:class:`~fedforget.data.modes.Kind`)."""
        return self.mode.kind


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


@dataclass(frozen=True)
class HookSetup:
    """What a method's training-time hook may use on a client: its own data, nothing else.

    Attributes
    ----------
    data : ArrayDataset
        The client's local training data (as it trains on it this round).
    deleting : np.ndarray
        Boolean mask over ``data``: the samples the client will ask to delete (its part of
        the simulated deletion plan, or its filed, pending requests on a real node).
    kept : State or None
        What the hook kept on this client in the earlier rounds (``None`` at first).
    num_classes : int
        Classes of the federation's model.
    mode : DeletionMode
        The configured deletion.
    forget_classes : tuple of int
        The configured forgotten classes.
    client_seed : int
        The same every round for this client (the run's seed plus its partition id).
    round_seed : int
        This round's seed for this client (its batch order).
    lr, batch_size : float, int
        The round's local learning rate and the run's batch size.
    device : torch.device
        Where the client trains.
    shared_model : bool
        The trained model serves several ``compare`` branches: a hook must not change it
        beyond what plain training does.
    """

    data: ArrayDataset
    deleting: np.ndarray
    kept: State | None
    num_classes: int
    mode: DeletionMode
    forget_classes: tuple[int, ...]
    client_seed: int
    round_seed: int
    lr: float
    batch_size: int
    device: torch.device
    shared_model: bool = False


class TrainingHook(ABC):
    """A method's work during a client's local training, called after each local step."""

    @abstractmethod
    def __call__(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        """Run after a local step on the batch ``(x, y)`` (the model's weights as stepped)."""

    @abstractmethod
    def kept(self) -> State | None:
        """The arrays the client keeps for the method now (``None``: nothing to keep)."""

    @abstractmethod
    def spent_seconds(self) -> float:
        """The compute seconds the hook spent (recorded as the method's training cost)."""


class UnlearnerSettings(BaseModel):
    """Base of every unlearner's options (unknown options are errors)."""

    model_config = ConfigDict(extra="forbid")


class Unlearner(ABC):
    """Base class of every unlearning method.

    Subclasses set ``name``, ``needs``, a ``Settings`` model and implement :meth:`unlearn`;
    ``uses_relay`` says whether the method includes paper 000's recovery relay; ``modes``
    lists the kinds of deletion the method is defined for (``mode_reason`` says why, for the
    refusal of the others). A method whose clients work during training (a client-side need)
    names the need in ``hook_need`` and implements :meth:`training_hook`.
    """

    name: ClassVar[str]
    needs: ClassVar[frozenset[DataNeed]] = frozenset({"forget"})
    modes: ClassVar[frozenset[Kind]] = frozenset(Kind)
    hook_need: ClassVar[DataNeed | None] = None
    """The need whose data :meth:`training_hook` keeps on the clients (``None``: no hook)."""
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
    def refusal(cls, mode: str | DeletionMode) -> str | None:
        """Why this method does not carry out a ``mode`` deletion (``None``: it does)."""
        mode = deletion_mode(mode)
        if mode.kind in cls.modes:
            return None
        allowed = ", ".join(sorted(cls.modes))
        why = f" ({cls.mode_reason})" if cls.mode_reason else ""
        return f"{cls.name} supports only mode(s) {allowed}{why}; got mode '{mode.name}'"

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

    def training_hook(self, setup: HookSetup) -> TrainingHook | None:
        """The method's work on a client during FedAvg training (``None``: none here).

        Called by the client for every training message of a run whose method declares
        :attr:`hook_need`; what the hook keeps is the need's data at the deletion.
        """
        return None

    def kept_after_deletion(
        self, kept: State, mode: DeletionMode, classes: tuple[int, ...]
    ) -> State:
        """What a client keeps of the hook's arrays once it dropped its D_f (default: nothing:
        the arrays were made from the deleted data too)."""
        return {}

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


def configured_unlearner(config: SimulationConfig, name: str) -> Unlearner:
    """The unlearner ``name`` with its options from ``config.methods.options[name]``.

    Every method's options live there, validated by the method's own ``Settings``; the
    server's strategy and the clients build a run's unlearners through this one function.

    Raises
    ------
    ConfigError
        An unknown name, or an option its ``Settings`` refuses (one line).
    """
    return build_unlearner(name, **config.methods.options.get(name, {}))
