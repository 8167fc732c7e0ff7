"""The deletion-mode extension point: what is deleted, how it is planned and how it is scored.

A deletion mode says everything the rest of fedforget needs to know about one kind of
deletion request, so that no other module compares mode names:

- how D_f is planned from the clients' data (:meth:`DeletionMode.plan`) and what the clients'
  training data look like because of it (:meth:`DeletionMode.prepare_train`: the backdoor's
  trigger stamped on the samples that will be deleted);
- the evaluation splits beside D_f itself (:meth:`DeletionMode.forget_test_set` ``D_tf``,
  :meth:`DeletionMode.retain_test_set` ``D_tr``, :meth:`DeletionMode.attack_test_set`);
- whether D_f is *natural* data (after retraining it looks like unseen data of the task),
  whether the request names whole classes, whether the deleting clients leave;
- what the configuration must say (:meth:`DeletionMode.check`), which clients delete by
  default, and, for node-side requests, the mode that a step's filed requests amount to
  (:meth:`DeletionMode.resolve`).

Unlearners see a mode's :class:`Kind` (what *kind* of data is forgotten: triggered samples,
ordinary samples, classes, clients); a new mode of an existing kind (e.g. a client whose
images carry a style of their own leaves) works with every method defined for that kind.

Modes register by name in :data:`DELETION_MODES`; :func:`deletion_mode` looks one up (a
one-line :class:`~fedforget.config.ConfigError` for an unknown name).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from fedforget.data.sources.base import ArrayDataset
from fedforget.errors import ConfigError
from fedforget.registry import Registry, UnknownNameError

if TYPE_CHECKING:
    from fedforget.config import SimulationConfig
    from fedforget.data.deletion import Federation
    from fedforget.data.sources.base import DatasetBundle


class Kind(StrEnum):
    """What kind of data a deletion forgets: the distinction unlearners act on."""

    BACKDOOR = "backdoor"
    """Chosen samples that carry a trigger and the attacker's label."""
    RANDOM = "random"
    """Chosen samples of the clients' data (paper 001's item unlearning)."""
    CLASS = "class"
    """Every sample of some classes (category unlearning)."""
    CLIENT = "client"
    """A client's whole data: the client leaves the federation."""


class UnknownModeError(UnknownNameError):
    """A deletion mode that is not registered."""


TRIGGER_MARGIN = 1


def apply_trigger(x: np.ndarray, size: int) -> np.ndarray:
    """Stamp the backdoor trigger: a white ``size`` x ``size`` square near the bottom-right.

    Parameters
    ----------
    x : np.ndarray
        Images (N, C, H, W) in [0, 1]; not modified.
    size : int
        Side of the square in pixels; it sits ``TRIGGER_MARGIN`` pixels from the border.

    Returns
    -------
    np.ndarray
        A triggered copy.
    """
    out = x.copy()
    end_h = x.shape[2] - TRIGGER_MARGIN
    end_w = x.shape[3] - TRIGGER_MARGIN
    out[:, :, end_h - size : end_h, end_w - size : end_w] = 1.0
    return out


@dataclass(frozen=True)
class DeletionPlan:
    """Which training samples are deleted, held by which clients.

    Attributes
    ----------
    mode : str
        The deletion mode's name (:mod:`fedforget.data.modes`).
    forget_by_client : dict[int, np.ndarray]
        Partition id -> sorted global indices (into the federation's training set) of D_f^i.
    forget_classes : tuple[int, ...]
        Classes forgotten in class mode, else empty.
    backdoor_target : int | None
        Label carried by the triggered samples in backdoor mode, else None.
    """

    mode: str
    forget_by_client: dict[int, np.ndarray]
    forget_classes: tuple[int, ...] = ()
    backdoor_target: int | None = None

    @property
    def deletion_mode(self) -> DeletionMode:
        """The registered mode that made this plan."""
        return deletion_mode(self.mode)

    @property
    def deleting_clients(self) -> list[int]:
        """Partition ids that hold deleted samples."""
        return sorted(cid for cid, idx in self.forget_by_client.items() if len(idx))

    @property
    def forget_indices(self) -> np.ndarray:
        """All deleted global indices, sorted."""
        parts = list(self.forget_by_client.values())
        return np.sort(np.concatenate(parts)) if parts else np.empty(0, dtype=np.int64)


class DeletionMode(ABC):
    """One kind of deletion request: its plan, its data, its splits, its configuration.

    Subclasses set the class attributes and implement :meth:`plan`; the defaults describe a
    deletion of chosen samples that changes no data and has no split of its own.
    """

    name: ClassVar[str]
    kind: ClassVar[Kind]
    summary: ClassVar[str] = ""
    """One line for ``fedforget list``."""
    aliases: ClassVar[tuple[str, ...]] = ()
    natural: ClassVar[bool] = False
    """D_f is ordinary data of the task: a model retrained without it treats it as unseen
    data (distill's deletion-aware target, the sweep's D_f check)."""
    wrong_labels: ClassVar[bool] = False
    """D_f's labels are wrong (annotation errors): retrained without D_f, a model predicts
    another class for each of its samples, so D_f's unseen level is the margin that unseen
    samples of *other* classes have for D_f's label (distill's deletion-aware target)."""
    names_classes: ClassVar[bool] = False
    """The request names whole classes (``forget_classes``): D_tf is their test data."""
    accepts_classes: ClassVar[bool] = False
    """``forget_classes`` may be configured."""
    clients_leave: ClassVar[bool] = False
    """The deleting clients leave the federation with their data."""
    node_side: ClassVar[bool] = False
    """Users file the requests on real nodes (:mod:`fedforget.node`): no plan, no simulation."""
    gan_mode: ClassVar[str | None] = None
    """What the GAN task (paper 001) calls this deletion: ``item``, ``class`` or ``None``
    (the GAN task does not carry it out)."""
    default_round: ClassVar[int | None] = None
    """The deletion round when none is configured (``None``: the configuration's default)."""
    example: ClassVar[dict[str, Any]] = {}
    """``deletion`` settings of a small example of the mode (the modes' conformance test)."""

    # ------------------------------------------------------------------ configuration
    def check(self, config: SimulationConfig) -> None:
        """Raise ``ValueError`` (one line) when the configuration cannot make this deletion."""
        deletion = config.deletion
        if self.names_classes and not deletion.forget_classes:
            raise ValueError(f"mode '{self.name}' needs at least one --forget-class")
        if deletion.forget_classes and not self.accepts_classes:
            raise ValueError(f"--forget-class applies to --mode class, not {self.name}")
        if self.node_side and len(deletion.rounds) > 1:
            raise ValueError(
                f"mode '{self.name}' takes node-side requests whenever they are filed; "
                "give it one --deletion-round"
            )

    def default_deleting_clients(self, config: SimulationConfig) -> list[int]:
        """The deleting clients when none are configured: every client holds part of D_f
        (paper 000 spreads the deleted share over the users)."""
        return list(range(config.clients))

    # ------------------------------------------------------------------ data
    @abstractmethod
    def plan(
        self,
        bundle: DatasetBundle,
        client_indices: list[np.ndarray],
        config: SimulationConfig,
    ) -> DeletionPlan:
        """Choose D_f: which training samples each deleting client deletes.

        Raises
        ------
        ConfigError
            When the data cannot carry the configured deletion.
        """

    def prepare_train(
        self, bundle: DatasetBundle, plan: DeletionPlan, config: SimulationConfig
    ) -> ArrayDataset:
        """The training set as the clients hold it (the default: the bundle's, unchanged)."""
        return bundle.train

    def forget_test_set(self, federation: Federation) -> ArrayDataset | None:
        """D_tf: test data that stands for what was forgotten (``None``: no such split).

        By default the test data of the plan's forgotten classes, if it names any.
        """
        classes = list(federation.plan.forget_classes)
        if not classes:
            return None
        return federation.test.subset(np.flatnonzero(np.isin(federation.test.y, classes)))

    def retain_test_set(self, federation: Federation) -> ArrayDataset:
        """D_tr: test data of what was kept (by default the test set less D_tf's classes)."""
        classes = list(federation.plan.forget_classes)
        if not classes:
            return federation.test
        return federation.test.subset(np.flatnonzero(~np.isin(federation.test.y, classes)))

    def attack_test_set(self, federation: Federation) -> ArrayDataset | None:
        """Test data that measures an attack D_f planted: with a backdoor target in the plan,
        the triggered test samples whose true label is not the target, labelled with it."""
        target = federation.plan.backdoor_target
        if target is None:
            return None
        keep = federation.test.y != target
        x = apply_trigger(federation.test.x[keep], federation.trigger_size)
        return ArrayDataset(x=x, y=np.full(int(keep.sum()), target, dtype=np.int64))

    def resolve(self, named_classes: bool) -> DeletionMode:
        """The mode a deletion step carries out (node-side requests: what was filed)."""
        return self

    def __repr__(self) -> str:
        return f"<deletion mode {self.name}>"

    def __eq__(self, other: object) -> bool:
        """A mode equals itself and the names it is registered under (looked up)."""
        if isinstance(other, str):
            return DELETION_MODES.get(other) is self
        return other is self

    __hash__ = object.__hash__


DELETION_MODES: Registry[DeletionMode] = Registry("deletion mode", error=UnknownModeError)


def register_mode(mode: type[DeletionMode]) -> type[DeletionMode]:
    """Class decorator: register an instance of a deletion mode under its name and aliases."""
    instance = mode()
    DELETION_MODES.add(mode.name, instance)
    for alias in mode.aliases:
        DELETION_MODES.add(alias, instance)
    return mode


def deletion_mode(name: str | DeletionMode) -> DeletionMode:
    """The registered mode ``name`` (a mode is returned as it is)."""
    if isinstance(name, DeletionMode):
        return name
    return DELETION_MODES.lookup(name)


def mode_names() -> list[str]:
    """The registered modes' names (aliases left out)."""
    return sorted({mode.name for mode in DELETION_MODES.values()})


def mode_help() -> str:
    """The modes for a help text: ``name`` (``= alias``): summary, separated by ``|``."""
    parts = []
    for name in mode_names():
        mode = DELETION_MODES[name]
        aliases = "".join(f" (= {alias})" for alias in mode.aliases)
        parts.append(f"{name}{aliases}: {mode.summary}")
    return " | ".join(parts)


# ---------------------------------------------------------------------- shared plans
def draw_samples(
    labels: np.ndarray,
    client_indices: list[np.ndarray],
    config: SimulationConfig,
    excluded_label: int | None = None,
) -> dict[int, np.ndarray]:
    """``count`` (or ``share`` x N) samples drawn uniformly from the deleting clients' data.

    Samples labelled ``excluded_label`` are not eligible (a backdoor relabels its samples to
    the target: relabelling samples of the target would be no attack).
    """
    rng = np.random.default_rng(config.data_seed + 7919)
    clients = config.deleting_client_ids()
    pools = [client_indices[cid] for cid in clients]
    if excluded_label is not None:
        pools = [pool[labels[pool] != excluded_label] for pool in pools]
    owners = np.concatenate(
        [np.full(len(pool), cid) for cid, pool in zip(clients, pools, strict=True)]
    )
    pool = np.concatenate(pools)
    wanted = config.deletion.count or round(config.deletion.share * len(labels))
    if wanted > len(pool):
        raise ConfigError(
            f"deleting {wanted} samples needs more than "
            f"the {len(pool)} eligible samples held by deleting clients {clients}; "
            "add --deleting-clients or lower --delete"
        )
    if wanted == 0:
        raise ConfigError(f"a share of {config.deletion.share:.2%} deletes no sample at all")
    picked = rng.choice(len(pool), size=wanted, replace=False)
    return nonempty(
        {cid: np.sort(pool[picked][owners[picked] == cid]).astype(np.int64) for cid in clients}
    )


def nonempty(chosen: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """The clients that delete at least one sample, their indices as int64."""
    return {cid: idx.astype(np.int64) for cid, idx in chosen.items() if len(idx)}


def whole_clients(client_indices: list[np.ndarray], config: SimulationConfig) -> dict:
    """Every sample of the deleting clients; at least one client must stay."""
    leaving = config.deleting_client_ids()
    if len(leaving) >= len(client_indices):
        raise ConfigError(f"mode '{config.deletion.mode}' needs at least one client that stays")
    return {cid: client_indices[cid] for cid in leaving}


def leaving_by_default(config: SimulationConfig) -> list[int]:
    """The first ``max(1, round(share x clients))`` clients."""
    return list(range(max(1, round(config.deletion.share * config.clients))))


# ---------------------------------------------------------------------- the modes
@register_mode
class BackdoorMode(DeletionMode):
    """Paper 000's sample unlearning: triggered, relabelled samples spread over the clients."""

    name = "backdoor"
    kind = Kind.BACKDOOR
    summary = "triggered samples relabelled to a target class (paper 000's sample unlearning)"

    def plan(self, bundle, client_indices, config):
        target = config.deletion.backdoor_target
        if target >= bundle.num_classes:
            raise ConfigError(
                f"backdoor target {target} is out of range [0, {bundle.num_classes - 1}]"
            )
        chosen = draw_samples(bundle.train.y, client_indices, config, excluded_label=target)
        return DeletionPlan(self.name, chosen, backdoor_target=target)

    def prepare_train(self, bundle, plan, config):
        train, idx = bundle.train, plan.forget_indices
        x = train.x.copy()
        y = train.y.copy()
        x[idx] = apply_trigger(train.x[idx], config.deletion.trigger_size)
        y[idx] = plan.backdoor_target
        return ArrayDataset(x=x, y=y)


@register_mode
class RandomMode(DeletionMode):
    """Chosen ordinary samples (paper 001's item unlearning)."""

    name = "random"
    kind = Kind.RANDOM
    summary = "a random share of the deleting clients' samples"
    aliases = ("item",)
    natural = True
    gan_mode = "item"

    def plan(self, bundle, client_indices, config):
        return DeletionPlan(self.name, draw_samples(bundle.train.y, client_indices, config))


@register_mode
class ClassMode(DeletionMode):
    """Category unlearning: every sample of the forgotten classes that the deleting clients
    hold (by default all clients: the class leaves the federation)."""

    name = "class"
    kind = Kind.CLASS
    summary = "every sample of the forgotten classes (--forget-class)"
    example = {"forget_classes": [3]}
    names_classes = True
    accepts_classes = True
    gan_mode = "class"

    def plan(self, bundle, client_indices, config):
        classes = config.deletion.forget_classes
        bad = [c for c in classes if not 0 <= c < bundle.num_classes]
        if bad:
            raise ConfigError(
                f"forget class {bad[0]} is out of range [0, {bundle.num_classes - 1}]"
            )
        labels = bundle.train.y
        chosen = {
            cid: client_indices[cid][np.isin(labels[client_indices[cid]], classes)]
            for cid in config.deleting_client_ids()
        }
        return DeletionPlan(self.name, nonempty(chosen), tuple(sorted(classes)))


@register_mode
class ClientMode(DeletionMode):
    """A client leaves the federation with its whole data (FedEraser's client removal)."""

    name = "client"
    kind = Kind.CLIENT
    summary = "the deleting clients leave with their whole data"
    example = {"deleting_clients": [0]}
    natural = True
    clients_leave = True

    def default_deleting_clients(self, config):
        return leaving_by_default(config)

    def plan(self, bundle, client_indices, config):
        return DeletionPlan(self.name, whole_clients(client_indices, config))


def invert(x: np.ndarray) -> np.ndarray:
    """The style of :class:`StyleMode`: negatives of the images (in [0, 1])."""
    return (1.0 - x).astype(x.dtype)


@register_mode
class StyleMode(DeletionMode):
    """A client whose images carry a style of their own leaves the federation.

    The deleting clients' images are negatives (``1 - x``): as a scanner that saves
    negatives would make them, a feature no other client's data has. The model that trained
    with them reads negatives; a model retrained without them does not. D_tf is the test set
    in the same style (a held-out set of that style), D_tr the test set as it is.

    Why negatives: of the styles measured (LeNet-5, 12,000 MNIST samples, 2 epochs, against
    600 styled samples added), negatives separated the two models most: read at 18 % without
    the styled client and 80 % with it (a quarter turn: 13 % / 71 %, half a turn 38 % / 69 %,
    a checkerboard texture 94 % / 96 %, i.e. no style at all for a CNN).
    """

    name = "style"
    kind = Kind.CLIENT
    summary = "the deleting clients leave; their images are negatives, a style no one else has"
    clients_leave = True
    example = {"deleting_clients": [0]}

    def default_deleting_clients(self, config):
        return leaving_by_default(config)

    def plan(self, bundle, client_indices, config):
        return DeletionPlan(self.name, whole_clients(client_indices, config))

    def prepare_train(self, bundle, plan, config):
        train, idx = bundle.train, plan.forget_indices
        x = train.x.copy()
        x[idx] = invert(train.x[idx])
        return ArrayDataset(x=x, y=train.y)

    def forget_test_set(self, federation):
        return ArrayDataset(x=invert(federation.test.x), y=federation.test.y)


@register_mode
class MislabeledMode(DeletionMode):
    """Annotation errors: chosen samples carry a wrong label, and their clients delete them.

    Each chosen sample's label is replaced by another class drawn at random (seeded), as a
    careless annotator would; a model memorises such labels one by one (MNIST, LeNet-5: 27 %
    of 480 wrong labels after 14 epochs on 12,000 samples, a retrained model 0.2 %). D_f's
    accuracy is measured against the wrong labels the clients hold.
    """

    name = "mislabeled"
    kind = Kind.RANDOM
    natural = True
    wrong_labels = True
    summary = "chosen samples carry a wrong label (annotation errors); their clients delete them"
    example = {"share": 0.06}

    def plan(self, bundle, client_indices, config):
        return DeletionPlan(self.name, draw_samples(bundle.train.y, client_indices, config))

    def prepare_train(self, bundle, plan, config):
        train, idx = bundle.train, plan.forget_indices
        classes = bundle.num_classes
        shift = np.random.default_rng([config.data_seed, 4243]).integers(1, classes, len(idx))
        y = train.y.copy()
        y[idx] = (train.y[idx] + shift) % classes
        return ArrayDataset(x=train.x, y=y)


@register_mode
class RequestsMode(DeletionMode):
    """Deletions users file on real nodes (``fedforget request-deletion``).

    Nothing is planned: each node reports its own requests. A step whose requests all name
    classes is a class deletion, any other a deletion of chosen samples.
    """

    name = "requests"
    kind = Kind.RANDOM
    summary = "requests users file on real nodes (flwr run; fedforget request-deletion)"
    accepts_classes = True
    node_side = True
    gan_mode = "item"
    default_round = 1

    def plan(self, bundle, client_indices, config):
        return DeletionPlan(self.name, {})

    def resolve(self, named_classes):
        return deletion_mode(ClassMode.name if named_classes else RandomMode.name)


__all__ = [
    "DELETION_MODES",
    "DeletionMode",
    "Kind",
    "UnknownModeError",
    "apply_trigger",
    "deletion_mode",
    "mode_help",
    "mode_names",
    "register_mode",
]
