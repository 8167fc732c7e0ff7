"""Validated configuration of a fedforget run.

Every setting lives in one pydantic model, :class:`SimulationConfig`, validated once at the
edge (CLI, Flower run config or Python call). Checks that need the data (a forget class out of
range, deleting more than the chosen clients hold) run when the federation is built and raise
:class:`ConfigError` too, so a user error is always one exception type with a one-line message.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import statistics
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from fedforget.errors import ConfigError

MAX_CLIENTS = 100_000
"""Each client is a Flower node that the simulation engine polls and a round messages; a
300-client round takes ~12 s on 2 cores (docs/results.md), so 100,000 is far beyond a run
that finishes, yet no real federation is refused."""
MAX_CLASSES = 100_000
"""The classifier's head has one output per class and the metrics count per class: 100,000
outputs are 34 MB of LeNet-5 head per model copy, and every client holds copies."""
MAX_SAMPLES = 10**9
"""More samples than any dataset held in memory (10**9 MNIST images are 3 TB as float32)."""
MAX_ROUNDS = 100_000
"""A FedAvg round takes seconds at the least; 100,000 rounds are days of one run."""
MAX_EPOCHS = 1_000
"""Local or unlearning passes over the data: 1,000 passes are hours on MNIST per round."""
MAX_BATCH = 100_000
"""A batch is held in memory at once with its activations: 100,000 CIFAR images are 1.2 GB
of input alone."""
DEFAULT_BATCH, DEFAULT_EPOCHS = 50, 2
"""The training defaults where the clients hold enough data (MNIST's)."""
MIN_ROUND_STEPS = 20
"""Below this many SGD steps a round on the median client, the defaults are for small data."""
SMALL_DATA_STEPS = 100
"""Small data: local epochs are raised until the median client takes this many steps a round
(digits, 5 clients: 54 steps still moved 3.6 pt over the 3 rounds before the deletion, 108
steps converged)."""
SMALL_DATA_BATCHES = 16
"""Small data: the batch is the median client's samples over this, within [MIN_BATCH, 50]."""
MIN_BATCH = 16
MAX_DERIVED_EPOCHS = 10
"""Derived local epochs stop here: tiny clients would otherwise train for hundreds."""
MAX_LR = 10.0
"""A learning rate above 10 makes SGD diverge for any model this project trains (NaN weights)."""
SEED_LIMIT = 2**32
"""Seeds lie in [0, 2**32): NumPy's seed range (``RandomState``), and the seeds derived from
one (``seed x 1,000,003 + ...``) must stay below 2**64, torch's limit."""
MAX_TIMEOUT = 30 * 24 * 3600.0
"""Seconds: 30 days. Longer waits overflow the waiting primitives (``threading.Event.wait``)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def _whole_config(info: ValidationInfo) -> bool:
    """False while one source of values (a ``--config`` file) is validated on its own: its
    fields must hold, but checks across fields wait for the merged configuration."""
    return not (info.context or {}).get("partial", False)


class DataConfig(_Section):
    """Where the data comes from and how it is split across clients."""

    dataset: str = Field(
        "mnist",
        description="A registered dataset (fedforget list): mnist, digits, fashion-mnist, "
        "cifar10, cifar100, or npz (your own files, with --data-path).",
    )
    seed: int | None = Field(
        None,
        ge=0,
        lt=SEED_LIMIT,
        description="Seed of the data alone: the subsample, the partition, D_f and the "
        "validation split (default: the run's seed). With it fixed, other run seeds train the "
        "same federation from other initial weights and batch orders (forget-quality audits).",
    )
    path: Path | None = Field(
        None,
        description="Custom data ('npz'): one .npz (x_train, y_train, x_test, y_test) or a "
        "folder of client_*.npz (x, y) plus test.npz.",
    )
    data_dir: Path | None = Field(
        None, description="Dataset cache folder; default $FEDFORGET_DATA or ~/.cache/fedforget."
    )
    num_classes: int | None = Field(
        None,
        ge=1,
        le=MAX_CLASSES,
        description=(
            "Custom data ('npz'): the number of classes, at most 100,000 (one head output "
            "each); default the largest label + 1, and a label that no sample has below it is "
            "refused (a stray label, not a class)."
        ),
    )
    partition: Literal["iid", "dirichlet", "shards"] = Field(
        "iid", description="How the training set is split: iid | dirichlet | shards."
    )
    alpha: float = Field(
        0.5,
        ge=0.01,
        le=1e6,
        description="Dirichlet concentration of the label split, in [0.01, 1e6]: below 0.01 "
        "each class goes to one client to float precision (use shards), far above 100 the split "
        "is iid.",
    )
    shards_per_client: int = Field(
        2,
        ge=1,
        le=10_000,
        description="Shards partition: label-sorted shards per client (at most 10,000; each "
        "shard needs samples of its own).",
    )
    validation_share: float = Field(
        0.1,
        ge=0,
        lt=1,
        description=(
            "Share of the test set the server holds out as its declared validation set (a "
            "seeded draw; 0 = none): distill's deletion-aware target reads it, and every test "
            "metric is measured on the rest."
        ),
    )
    train_samples: int | None = Field(
        None,
        ge=1,
        le=MAX_SAMPLES,
        description=(
            "Keep only this many training samples (a seeded draw) before partitioning: few"
            " samples per client make a federation that memorises (membership-attack presets)."
        ),
    )


class DeletionConfig(_Section):
    """Which data is deleted, by whom, and when.

    ``round`` is the FedAvg round after which the deletion requests arrive: the unlearning step
    runs between round ``round`` and round ``round + 1``. In ``requests`` mode (real nodes
    with request files, :mod:`fedforget.node`) it is the first round whose replies report the
    requests filed so far (default 1: at once).

    Sequential deletions: ``round`` may list several rounds (``[4, 7]``), one deletion step
    after each. Step k is asked for by the k-th group of ``deleting_clients`` when it is given
    per step (``[[5], [6]]``, the CLI's ``5/6``); otherwise the deleting clients are split in
    as many consecutive groups as there are rounds. Each client deletes its whole D_f at its
    step (in ``client`` mode it leaves then); a step whose clients hold no D_f deletes nothing.
    """

    mode: str = Field(
        "backdoor",
        description="The deletion mode (fedforget.data.modes; `fedforget list` names them).",
    )
    share: float = Field(
        0.06, description="Share of all training samples to delete, strictly in (0, 1)."
    )
    count: int | None = Field(
        None,
        ge=1,
        le=MAX_SAMPLES,
        description="Exact number of samples to delete (backdoor, random); overrides share; at "
        "most 10**9 (more than any dataset held in memory).",
    )
    deleting_clients: list[int] | list[list[int]] | None = Field(
        None,
        description=(
            "Partition ids of the deleting clients; default: every client (backdoor, random,"
            " class) or the first max(1, round(share x clients)) clients (client mode). A list"
            " of lists names each sequential deletion step's clients."
        ),
    )
    round: int | list[int] = Field(
        7,
        description="Round after which the deletion requests arrive; a list: one step each "
        "(default 7; 20 on the shards partition).",
    )
    forget_classes: list[Annotated[int, Field(ge=0, lt=MAX_CLASSES)]] = Field(
        default_factory=list,
        description="Classes to forget (mode class); class ids below 100,000 and the data's "
        "classes.",
    )
    backdoor_target: int = Field(
        0,
        ge=0,
        lt=MAX_CLASSES,
        description="Class the backdoor trigger maps to (mode backdoor); below the data's classes.",
    )
    trigger_size: int = Field(
        4,
        ge=1,
        le=1024,
        description="Side of the square trigger, in pixels, in [1, 1024] (smaller than the "
        "images).",
    )
    untrained: Literal["drop", "unlearn"] = Field(
        "drop",
        description="When the model has not learned yet (its accuracy on the declared "
        "validation set within 10 pt of chance): 'drop' = the clients drop D_f and FedAvg goes "
        "on, with no unlearning and no relay (a model that learned nothing holds nothing of "
        "D_f to forget); 'unlearn' = the full step all the same. Without a validation set the "
        "full step runs.",
    )

    @field_validator("mode")
    @classmethod
    def _registered_mode(cls, value: str) -> str:
        from fedforget.data.modes import deletion_mode

        return deletion_mode(value).name  # an alias (item) becomes the mode's name

    @model_validator(mode="after")
    def _the_modes_own_default_round(self) -> DeletionConfig:
        from fedforget.data.modes import deletion_mode

        default = deletion_mode(self.mode).default_round
        if default is not None and "round" not in self.model_fields_set:
            self.round = default
        return self

    @field_validator("round")
    @classmethod
    def _rounds_increase(cls, value: int | list[int]) -> int | list[int]:
        rounds = [value] if isinstance(value, int) else list(value)
        if not rounds or any(r < 1 for r in rounds):
            raise ValueError(f"deletion rounds must be at least 1, got {value}")
        if any(later <= earlier for earlier, later in itertools.pairwise(rounds)):
            raise ValueError(f"deletion rounds must increase, got {value}")
        return rounds[0] if len(rounds) == 1 else rounds  # one round stays an int

    @property
    def rounds(self) -> list[int]:
        """The rounds of the deletion steps, in order (one for a single deletion)."""
        return [self.round] if isinstance(self.round, int) else list(self.round)

    def client_groups(self) -> list[list[int]] | None:
        """The deleting clients of each step when given per step, else ``None``."""
        ids = self.deleting_clients
        if ids and isinstance(ids[0], list):
            return [sorted(set(group)) for group in ids]  # type: ignore[arg-type]
        return None

    @field_validator("share")
    @classmethod
    def _share_in_open_unit_interval(cls, value: float) -> float:
        if not 0.0 < value < 1.0:
            raise ValueError(
                f"deletion share must lie strictly between 0% and 100%, got {value:.2%}"
            )
        return value


class TrainConfig(_Section):
    """FedAvg and local training.

    Paper 000 trains MNIST with SGD, lr 0.01, batch 100; with 10 rounds of 2 local epochs that
    reached only 97.5 % by the deletion round here, so the default is SGD lr 0.05, momentum 0.9,
    batch 50 (98.7 % after 7 rounds).

    ``batch_size`` and ``local_epochs`` left unset are derived from the clients' data
    (:meth:`resolved`): batch 50 and 2 epochs wherever they give the median client at least
    :data:`MIN_ROUND_STEPS` SGD steps a round (MNIST up to ~125 clients: every measured
    default run), else smaller batches and more epochs up to :data:`SMALL_DATA_STEPS` steps.
    LeNet-5 sits on a plateau at chance for its first ~100-150 steps; a digits-sized dataset
    (5 clients of 280 samples) had 12 steps a round at batch 50 and stayed at 11 % for 10
    rounds, and learns to 98.6 % at batch 16 x 6 epochs (docs/results.md).
    """

    rounds: int = Field(
        10,
        ge=1,
        le=MAX_ROUNDS,
        description="FedAvg rounds in all, at most 100,000 (default 10; 23 on the shards "
        "partition).",
    )
    local_epochs: int | None = Field(
        None,
        ge=1,
        le=MAX_EPOCHS,
        description="Local epochs per round, at most 1,000 (default: derived from the data; "
        "2 unless the clients hold little data).",
    )
    lr: float = Field(
        0.05,
        gt=0,
        le=MAX_LR,
        description="Client learning rate (SGD), in (0, 10]: larger steps diverge (default "
        "0.05; 0.02 on the shards partition).",
    )
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum, in [0, 1).")
    batch_size: int | None = Field(
        None,
        ge=1,
        le=MAX_BATCH,
        description="Client batch size, at most 100,000 in memory (default: derived from the "
        "data; 50 unless the clients hold little data).",
    )
    fraction_train: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Share of the clients sampled for each round; it must sample at least one.",
    )

    @property
    def is_resolved(self) -> bool:
        """Whether batch size and local epochs are set (given, or derived from the data)."""
        return self.batch_size is not None and self.local_epochs is not None

    def resolved(self, client_sizes: list[int]) -> TrainConfig:
        """These settings with an unset batch size and local epochs derived from the data.

        ``client_sizes``: the clients' numbers of training samples; the median client decides,
        so every node of a federation derives the same values. Set values are kept.
        """
        if self.is_resolved:
            return self
        samples = max(1, int(statistics.median(client_sizes))) if client_sizes else 1
        batch = self.batch_size or DEFAULT_BATCH
        epochs = self.local_epochs or DEFAULT_EPOCHS
        if math.ceil(samples / batch) * epochs < MIN_ROUND_STEPS:  # small data
            if self.batch_size is None:
                batch = min(DEFAULT_BATCH, max(MIN_BATCH, samples // SMALL_DATA_BATCHES))
            if self.local_epochs is None:
                needed = math.ceil(SMALL_DATA_STEPS / math.ceil(samples / batch))
                epochs = min(MAX_DERIVED_EPOCHS, max(DEFAULT_EPOCHS, needed))
        return self.model_copy(update={"batch_size": batch, "local_epochs": epochs})


class RecoveryConfig(_Section):
    """Performance-recovery relay of paper 000 (IV.C.3); policy in :mod:`fedforget.recovery`.

    A hop trains the model on the ``clients_per_hop`` weakest of at most ``candidates``
    clients (drawn once; each on at most ``hop_samples`` of its samples: a hop repairs, it
    need not cost a round), with FedProx's proximal term ``proximal_mu``, and is kept only if it
    raises the objective (the candidates' sample-weighted accuracy, or a declared validation
    set) by more than ``min_gain`` (on a validation set, also significantly: a sign test at
    ``significance`` on the samples the hop changed); a rejected hop halves the learning
    rate. Paper 000 stops at an absolute standard (``min_accuracy``); with ``restore`` the
    standard is the objective of the model before unlearning instead: the relay repairs
    what unlearning broke, no more (an absolute 0.97 is too low for a federation at 99 % and
    unreachable for one at 95 %, where it only made the relay train on). ``budget_rounds``
    caps the wall time of unlearning + relay at that many FedAvg rounds of the same run.
    """

    enabled: bool = Field(True, description="Run the recovery relay after unlearning.")
    objective: Literal["validation", "clients"] = Field(
        "validation",
        description="What a hop must raise: 'validation' = accuracy on the declared validation "
        "set when the run has one (its forgotten classes left out), else the candidates' "
        "accuracies; 'clients' = always the candidates' sample-weighted local accuracies.",
    )
    min_accuracy: float = Field(
        0.97,
        ge=0,
        le=1,
        description="Relay stops when every client reaches this (paper 000's absolute "
        "standard, used without restore).",
    )
    max_hops: int = Field(
        5,
        ge=0,
        le=1_000,
        description="Relay hop limit (at most 1,000: each hop is a round of local training).",
    )
    local_epochs: int = Field(
        1, ge=1, le=MAX_EPOCHS, description="Local epochs of a hop's training (at most 1,000)."
    )
    lr: float | None = Field(
        None,
        gt=0,
        le=MAX_LR,
        description="Relay learning rate, in (0, 10]; default: the clients' (train.lr).",
    )
    eval_samples: int = Field(
        500,
        ge=1,
        le=MAX_SAMPLES,
        description="Local samples each client scores (at most 10**9, more than memory holds).",
    )
    hop_samples: int = Field(
        1000,
        ge=1,
        le=MAX_SAMPLES,
        description="Local samples (at most) each of a hop's clients trains on; at most 10**9.",
    )
    candidates: int = Field(
        10,
        ge=1,
        le=MAX_CLIENTS,
        description="Clients the relay ever asks (bounded cost; at most 100,000 clients).",
    )
    clients_per_hop: int = Field(
        3,
        ge=1,
        le=MAX_CLIENTS,
        description="Weakest candidates that train per hop (at most 100,000, the most clients).",
    )
    proximal_mu: float = Field(
        1.0,
        ge=0,
        le=1e6,
        description="FedProx mu of the hop's local training, in [0, 1e6] (beyond, the term "
        "holds the model where it is).",
    )
    restore: bool = Field(
        True,
        description="Relay until the candidates' accuracy is back to the model's before "
        "unlearning (that level replaces min_accuracy); False = paper 000's absolute standard.",
    )
    restore_margin: float = Field(
        0.002,
        ge=0,
        le=1,
        description="With restore: stop once the objective is within this of the level before "
        "unlearning (the objective's own noise on ~10,000 samples is ~0.2 pt).",
    )
    min_gain: float = Field(
        0.001,
        ge=0,
        le=1,
        description="A hop is kept only if it raises the objective by more than this (a "
        "smaller rise is within the objective's noise).",
    )
    significance: float = Field(
        0.05,
        gt=0,
        le=1,
        description="On a validation set a hop is kept only if a one-sided exact sign test "
        "(McNemar's) on the samples it changed says it fixed more than it broke, at this level.",
    )
    budget_rounds: float | None = Field(
        1.0,
        gt=0,
        le=MAX_ROUNDS,
        description="Unlearning + relay stop hopping before they would exceed this many "
        "FedAvg rounds of the run (median round time; None = no time budget: the relay's "
        "only decision that depends on the machine's speed).",
    )


LEGACY_SECTION_METHOD = "distill"
"""The method whose settings an ``[unlearning]`` section of older files holds."""

OptionValue = bool | int | Annotated[float, Field(allow_inf_nan=True)] | str | None
"""A method's option value; a non-finite number is refused by :class:`MethodsConfig` with a
message of its own (rather than the union's "should be a valid boolean")."""


class MethodsConfig(_Section):
    """Settings of the unlearning methods and verifiers, by name.

    ``options`` maps a strategy (or verifier) name to its options, e.g.
    ``{"lau": {"alpha": 0.5}}``; each method validates its own with its ``Settings`` model
    (see ``fedforget list`` and docs/methods.md).
    """

    retain_per_client: int = Field(
        150,
        ge=1,
        le=MAX_SAMPLES,
        description="Retained samples each client sends to methods that need them (at most "
        "10**9: more than any client holds in memory).",
    )
    options: dict[str, dict[str, OptionValue]] = Field(
        default_factory=dict,
        description="A method's or verifier's options, NAME.KEY=VALUE (e.g. lau.alpha=0.5).",
    )

    @field_validator("options")
    @classmethod
    def _finite_numbers(
        cls, options: dict[str, dict[str, OptionValue]]
    ) -> dict[str, dict[str, OptionValue]]:
        for name, values in options.items():
            for key, value in values.items():
                if isinstance(value, float) and not math.isfinite(value):
                    raise ValueError(f"{name}.{key} must be a finite number, got {value}")
        return options


class VerifyConfig(_Section):
    """Verification by the deleting clients after the run (``--verify``).

    ``method`` names a verifier (``skyeye``, ``spd``) or ``none``; its options come from
    ``methods.options[method]`` (``--option skyeye.steps=1000``). The first ``clients``
    deleting clients (by partition id) verify the final global model on their own machine.
    """

    method: str = Field(
        "none", description="After the run the deleting clients verify: none | skyeye | spd."
    )
    clients: int = Field(
        1,
        ge=1,
        le=MAX_CLIENTS,
        description="How many deleting clients verify (at most the federation's clients).",
    )


class GanConfig(_Section):
    """The clients' conditional GAN (:mod:`fedforget.gan`).

    Trained by FedAvg in the GAN task (``task = "gan"``, the model paper 001 unlearns) and,
    next to the classifier, for methods that need the federation's generator (MuGAN, paper
    002 section 3.2). ``epochs`` local passes per round, Adam with ``lr`` (beta1 0.5).

    A GAN needs many *sequential* steps (~4,000 Adam steps of batch 64 for a conditional
    DCGAN on MNIST, ~0.9 judge recognition), and averaging clients that trained in parallel
    does not shorten that chain. So next to the classifier only ``generator_clients`` of the
    round's clients train the GAN, for ``epochs`` passes each: the chain grows by
    ``epochs x local steps`` per round at the cost of ``generator_clients`` clients.
    """

    epochs: int = Field(
        1,
        ge=1,
        le=MAX_EPOCHS,
        description="Local GAN epochs per round (GAN task, MuGAN; at most 1,000).",
    )
    generator_clients: int = Field(
        2,
        ge=1,
        le=MAX_CLIENTS,
        description="Clients per round that also train the GAN (MuGAN; at most the clients).",
    )
    lr: float = Field(
        2e-4, gt=0, le=MAX_LR, description="Adam learning rate of G and D, in (0, 10]."
    )
    batch_size: int = Field(
        64, ge=1, le=MAX_BATCH, description="GAN batch size (at most 100,000 in memory)."
    )
    width: int = Field(
        32,
        ge=4,
        le=1024,
        description="Base channel count of G and D, in [4, 1024] (1024 makes GB-sized nets).",
    )
    judge_epochs: int = Field(
        2,
        ge=1,
        le=MAX_EPOCHS,
        description="Epochs of the offline evaluation classifier (GAN metrics).",
    )


DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
# A Ray head node: host name, IPv4 or [IPv6], then the port of its GCS (``ray start --port``).
RAY_ADDRESS_PATTERN = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]*):(\d{1,5})")


def check_device(name: str, option: str = "--device") -> None:
    """Raise :class:`ConfigError` unless ``name`` is a device this machine has.

    ``auto`` always works (``cuda`` when present, else ``cpu``); ``cuda[:N]`` needs CUDA and
    that GPU. Checked before anything runs, so a typo never surfaces after training.
    """
    if not DEVICE_PATTERN.fullmatch(name):
        raise ConfigError(f"{option} {name}: expected auto, cpu, cuda, cuda:N or mps")
    if name == "mps":
        import torch

        if not torch.backends.mps.is_available():
            raise ConfigError(f"{option} mps: Apple's MPS is not available on this machine")
    if name.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"{option} {name}: CUDA is not available on this machine")
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ConfigError(
                f"{option} {name}: this machine has {torch.cuda.device_count()} GPU(s)"
            )


def check_data_dir(path: Path | None, option: str = "--data-dir") -> None:
    """Raise :class:`ConfigError` when a dataset cache folder is a file (before any download)."""
    if path is not None and path.expanduser().exists() and not path.expanduser().is_dir():
        raise ConfigError(f"{option} {path}: not a folder")


def check_writable_folder(folder: Path, option: str = "--out") -> None:
    """Raise :class:`ConfigError` unless ``folder`` is, or can become, a writable folder.

    Nothing is created: the nearest existing folder on the way is checked instead.
    """
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{option} {folder}: not a folder")
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{option} {folder}: cannot write there ({existing} is a file)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {folder}: cannot write there (permission denied)")


def check_local_paths(config: SimulationConfig) -> None:
    """Raise :class:`ConfigError` for a path of ``config`` that cannot serve on this machine.

    The custom data must exist and be a regular file or a folder (a FIFO would block its
    reader), the cache folder must not be a file, the run folder must be writable. Like
    :func:`check_device`, an edge check: the model itself cannot know where it will run.
    """
    path = config.data.path
    if path is not None:
        found = path.expanduser()
        if not found.exists():
            raise ConfigError(f"--data-path {path}: no such file or folder")
        if not (found.is_dir() or found.is_file()):
            raise ConfigError(f"--data-path {path}: not a regular file or a folder")
    check_data_dir(config.data.data_dir)
    if config.out is not None:
        check_writable_folder(config.out)


class ResourceConfig(_Section):
    """Ray resources per simulated client and where the server computes."""

    client_cpus: float = Field(
        1.0,
        ge=0.01,
        le=4096,
        description="CPUs per client actor, in [0.01, 4096]; on this machine at most its "
        "CPU count (Ray would wait forever for an actor it cannot place).",
    )
    client_gpus: float = Field(0.0, ge=0, le=1, description="GPU fraction per client actor.")
    server_device: str = Field("auto", description="auto | cpu | mps | cuda | cuda:N.")

    @field_validator("server_device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not DEVICE_PATTERN.fullmatch(value):
            raise ValueError(f"expected auto, cpu, cuda, cuda:N or mps, got '{value}'")
        return value

    ray_address: str | None = Field(
        None,
        description=(
            "An existing Ray cluster for the client actors: HOST:PORT of its head node, or "
            "'auto' (the cluster `ray start` began on this machine). None: RAY_ADDRESS if set, "
            "else a private Ray instance on this machine."
        ),
    )

    @field_validator("ray_address")
    @classmethod
    def _head_node_address(cls, value: str | None) -> str | None:
        if value is None or value == "auto":
            return value
        found = RAY_ADDRESS_PATTERN.fullmatch(value)
        if found is None or not 0 < int(found.group(2)) < 65536:
            raise ValueError(f"expected auto or HOST:PORT of a Ray head node, got '{value}'")
        return value


def check_resources(config: SimulationConfig) -> None:
    """Raise :class:`ConfigError` when a private Ray instance could never place a client.

    Ray waits, without end, for an actor that asks for more CPUs than the instance has (or
    for a GPU it lacks). On a cluster (``ray_address``, ``RAY_ADDRESS``) the cluster's own
    resources decide, so nothing is checked here. A machine check, like :func:`check_device`,
    it runs at the edge and before Ray starts, not in the model: the configuration also
    travels to nodes on other machines.
    """
    resources = config.resources
    if resources.ray_address or os.environ.get("RAY_ADDRESS"):
        return
    cpus = os.cpu_count() or 1
    if resources.client_cpus > cpus:
        raise ConfigError(
            f"--client-cpus {resources.client_cpus:g}: this machine has {cpus} CPU(s); "
            f"a client actor can ask for at most {cpus}"
        )
    if resources.client_gpus > 0:
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                f"--client-gpus {resources.client_gpus:g}: this machine has no CUDA GPU"
            )


PARTITION_DEFAULTS: dict[str, dict[str, float | int]] = {
    "shards": {"lr": 0.02, "rounds": 23, "deletion_round": 20},
}
"""Per partition: the training defaults it needs (``lr``, ``rounds``, ``deletion_round``).

Label-sorted shards (two classes a client) make each client pull the model toward its own
two classes. At the general defaults (lr 0.05, 10 rounds, deletion after round 7), 20
clients, seeds 0-2, the federation had not converged at the deletion round (72.8 % at round
7 for seed 1; the last 3 rounds before round 15 of a 20-round run spanned 3.2 and 3.6 pt)
and seed 2's retrain collapsed to one class at round 3. At lr 0.02 no retrain diverged
(seeds 0-2, 20 rounds: 96.8, 97.0, 96.4 %), and the federation still climbs in steps until
round ~18 (seed 0: 91.4, 93.2, 94.8 % over rounds 13-15): the deletion comes after round 20
of 23 (docs/results.md, "Shards")."""


class SimulationConfig(_Section):
    """Everything one ``fedforget simulate`` run needs."""

    clients: int = Field(
        20,
        le=MAX_CLIENTS,
        description="Number of simulated clients, in [2, 100,000] (default 20; a folder of "
        "client_*.npz: its files).",
    )
    seed: int = Field(
        0,
        ge=0,
        lt=SEED_LIMIT,
        description="Seed of everything, in [0, 2**32): NumPy's seed range; derived seeds "
        "(seed x 1,000,003 + ...) stay below torch's 2**64.",
    )
    message_timeout: float = Field(
        3600.0,
        ge=1,
        le=MAX_TIMEOUT,
        description="Seconds the server waits for any message's replies, in [1, 30 days]: no "
        "client answers in less than a second (default 3600).",
    )
    plugins: list[str] = Field(
        default_factory=list,
        description="Modules every node and the server import first (your models, datasets); "
        "the current folder is searched too.",
    )
    unlearn_on: Literal["server", "client"] = Field(
        "server",
        description=(
            "Where the unlearning runs: server (the papers: the server unlearns with the "
            "gathered D_f) | client (each requesting client unlearns its own D_f, in a chain; "
            "D_f never leaves a node)."
        ),
    )
    task: Literal["classify", "gan"] = Field(
        "classify",
        description="What the federation learns: classify | gan (a conditional GAN, paper 001).",
    )
    model: str = Field(
        "lenet5",
        description="A registered model (fedforget list): lenet5, lenet-att, resnet32, ...",
    )
    mia: str | None = Field(
        None,
        description=(
            "Membership attack behind the MIA column: median | svc | loss | calibrated "
            "(default: the strongest the run affords)."
        ),
    )
    strategy: str = Field(
        "distill",
        description="Unlearning strategy (fedforget list; default: distill, cascaded with the "
        "GAN task).",
    )
    reference: Literal["retrain", "none"] = Field(
        "retrain",
        description="retrain: also retrain from scratch without D_f, the reference every "
        "metric is compared with | none.",
    )
    reference_seeds: int = Field(
        1,
        ge=1,
        le=32,
        description="How many retrains form the reference, each from its own initial weights "
        "and batch order (the data and D_f stay the same): with K > 1 the reference is a "
        "band, mean ± std, and a check passes within max(0.5 pt, 2 std) of its mean; "
        "at most 32 (each is a full retrain).",
    )
    out: Path | None = Field(None, description="Run folder (default runs/<time>-...).")
    data: DataConfig = Field(default_factory=DataConfig)
    deletion: DeletionConfig = Field(default_factory=DeletionConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    recovery: RecoveryConfig = Field(default_factory=RecoveryConfig)
    methods: MethodsConfig = Field(default_factory=MethodsConfig)
    verify: VerifyConfig = Field(default_factory=VerifyConfig)
    gan: GanConfig = Field(default_factory=GanConfig)
    resources: ResourceConfig = Field(default_factory=ResourceConfig)

    @model_validator(mode="before")
    @classmethod
    def _distill_options_live_with_every_methods(cls, values: Any) -> Any:
        """An ``[unlearning]`` section (distill's settings, as configuration files and
        ``summary.json`` held them) becomes ``methods.options.distill``, where every method's
        options are; options given there win over the section's."""
        if not isinstance(values, dict) or "unlearning" not in values:
            return values
        values = dict(values)
        section = values.pop("unlearning")
        if not isinstance(section, dict):
            raise ValueError("unlearning: expected a table of distill's settings")
        methods = dict(values.get("methods") or {})
        options = dict(methods.get("options") or {})
        options[LEGACY_SECTION_METHOD] = {**section, **(options.get(LEGACY_SECTION_METHOD) or {})}
        methods["options"] = options
        values["methods"] = methods
        return values

    @field_validator("clients")
    @classmethod
    def _at_least_two_clients(cls, value: int) -> int:
        if value < 2:
            raise ValueError(f"a federation needs at least 2 clients, got {value}")
        return value

    @model_validator(mode="after")
    def _the_partitions_own_defaults(self, info: ValidationInfo) -> SimulationConfig:
        """Training settings a partition needs to converge, where the user set none.

        See :data:`PARTITION_DEFAULTS`. Set values (the command line, a ``--config`` file, a
        run's ``summary.json``) are kept: a configuration read back is the one that ran.
        """
        if not _whole_config(info):
            return self
        defaults = PARTITION_DEFAULTS.get(self.data.partition, {})
        train_set = set(self.train.model_fields_set)
        for key in ("lr", "rounds"):
            if key in defaults and key not in train_set:
                setattr(self.train, key, defaults[key])
        round_set = "round" in self.deletion.model_fields_set
        if "deletion_round" in defaults and not round_set and "rounds" not in train_set:
            self.deletion.round = defaults["deletion_round"]
        return self

    @model_validator(mode="after")
    def _cross_checks(self, info: ValidationInfo) -> SimulationConfig:
        if not _whole_config(info):
            return self
        last = self.deletion.rounds[-1]
        if last > self.train.rounds:
            raise ValueError(
                f"deletion round {last} is beyond the last round {self.train.rounds} "
                "(set deletion.round, --deletion-round)"
            )
        self._check_deletion_steps()
        ids = self.deletion_client_list()
        if ids is not None:
            bad = [i for i in ids if not 0 <= i < self.clients]
            if bad or not ids:
                raise ValueError(
                    f"deleting clients must be partition ids in [0, {self.clients - 1}], got {ids}"
                )
        mode = self.deletion_mode
        mode.check(self)
        if self.task == "gan" and mode.gan_mode is None:
            raise ValueError("the GAN task deletes images (--mode item) or a class (--mode class)")
        self._check_client_counts()
        return self

    @property
    def data_seed(self) -> int:
        """The seed of the data (``data.seed``, else the run's seed)."""
        return self.seed if self.data.seed is None else self.data.seed

    @property
    def deletion_mode(self):  # -> fedforget.data.modes.DeletionMode (imported lazily)
        """The configured deletion mode (:mod:`fedforget.data.modes`)."""
        from fedforget.data.modes import deletion_mode

        return deletion_mode(self.deletion.mode)

    def _check_client_counts(self) -> None:
        """Counts of clients that must fit the federation (a round samples at least one)."""
        fraction = self.train.fraction_train
        if self.clients * fraction < 1 - 1e-9:
            raise ValueError(
                f"train.fraction_train {fraction:g} samples no client of {self.clients} "
                f"(fraction x clients < 1); use at least {1 / self.clients:.3g}"
            )
        for where, count in (
            ("gan.generator_clients", self.gan.generator_clients),
            ("verify.clients", self.verify.clients),
        ):
            if count > self.clients:
                raise ValueError(f"{where} {count} exceeds the federation's {self.clients} clients")

    def deletion_client_list(self) -> list[int] | None:
        """The configured deleting clients, every step's together (``None``: the default)."""
        groups = self.deletion.client_groups()
        if groups is not None:
            return [cid for group in groups for cid in group]
        return self.deletion.deleting_clients  # type: ignore[return-value]

    def _check_deletion_steps(self) -> None:
        steps = len(self.deletion.rounds)
        groups = self.deletion.client_groups()
        if groups is not None and len(groups) != steps:
            raise ValueError(
                f"{len(groups)} groups of deleting clients for {steps} deletion rounds"
            )
        if groups is not None and any(not group for group in groups):
            raise ValueError("every deletion step needs at least one deleting client")
        if groups is not None and len({c for g in groups for c in g}) < sum(map(len, groups)):
            raise ValueError("a client can ask for its deletion in one step only")
        if groups is None and steps > 1 and len(self.deleting_client_ids()) < steps:
            raise ValueError(
                f"{steps} deletion rounds need at least {steps} deleting clients "
                "(or give each step's clients: --deleting-clients 5/6)"
            )

    def deletion_steps(self) -> list[tuple[int, list[int]]]:
        """Each sequential deletion step: its round and its deleting clients.

        Per-step groups when configured; otherwise the deleting clients split into as many
        consecutive groups as there are rounds (one group for a single deletion).
        """
        rounds = self.deletion.rounds
        groups = self.deletion.client_groups()
        if groups is None:  # at least one client per round (checked at validation)
            clients = self.deleting_client_ids()
            size, extra = divmod(len(clients), len(rounds))
            bounds = [k * size + min(k, extra) for k in range(len(rounds) + 1)]
            groups = [clients[bounds[k] : bounds[k + 1]] for k in range(len(rounds))]
        return list(zip(rounds, groups, strict=True))

    def deletion_round_of(self, client: int) -> int:
        """The round after which ``client`` asks for its deletion (the first one if it holds
        no D_f in any step)."""
        for deletion_round, clients in self.deletion_steps():
            if client in clients:
                return deletion_round
        return self.deletion.rounds[0]

    def deleting_client_ids(self) -> list[int]:
        """Partition ids of the deleting clients.

        Default: the mode's (:meth:`DeletionMode.default_deleting_clients`): every client
        holds part of D_f, or the first ``max(1, round(share x clients))`` clients leave.
        """
        configured = self.deletion_client_list()
        if configured is not None:
            return sorted(set(configured))
        return self.deletion_mode.default_deleting_clients(self)

    def to_json(self) -> str:
        """Serialise to JSON (paths as strings) for Flower run configs and ``summary.json``."""
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str) -> SimulationConfig:
        """Parse and validate a JSON configuration, raising :class:`ConfigError`."""
        return validate_config(json.loads(text))


def merge_sections(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``override``'s values, section by section (nested dicts merge)."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_sections(merged[key], value)
        else:
            merged[key] = value
    return merged


def validate_config(values: dict, *, partial: bool = False) -> SimulationConfig:
    """Validate raw values into a :class:`SimulationConfig`.

    Parameters
    ----------
    values : dict
        Sections and fields as in ``summary.json``'s ``config``.
    partial : bool
        Validate ``values`` as one source of a configuration still to be merged (a
        ``--config`` file): every field must hold, checks across fields are left for the
        merged configuration (and its plugins are not imported yet).

    The configuration's ``plugins`` are imported (:func:`fedforget.registry.load_plugins`)
    once it is valid, so that the names it holds can be looked up.

    Raises
    ------
    ConfigError
        With one line naming the first offending field, why, and its range where it has one.
    """
    try:
        config = SimulationConfig.model_validate(values, context={"partial": partial})
    except ValidationError as err:
        raise ConfigError(error_line(err, SimulationConfig)) from None
    if not partial:
        from fedforget.registry import load_plugins

        load_plugins(config.plugins)  # before any name of the configuration is looked up
    return config


RANGE_ERRORS = frozenset(
    {"greater_than", "greater_than_equal", "less_than", "less_than_equal", "finite_number"}
)


def error_line(err: ValidationError, model: type[BaseModel], owner: str = "") -> str:
    """The first error of ``err`` as one line: where, what, and the field's range if it has one.

    ``model`` is the model that was validated (its fields give the ranges and, for an unknown
    key, the section the key belongs to); ``owner`` prefixes the line (``"lau option "``).
    """
    first = err.errors()[0]
    loc = first["loc"]
    where = _where(loc)
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] in RANGE_ERRORS:
        span = field_range(model, loc)
        if span:
            message = f"{_shown(first.get('input'))} is outside {span}"
    elif first["type"] == "extra_forbidden":
        message = _unknown_key(model, loc)
    return f"{owner}{where}: {message}" if where else f"{owner}{message}"


def field_range(model: type[BaseModel], loc: tuple[int | str, ...]) -> str:
    """The interval the field at ``loc`` accepts, as ``[1, 1000]`` or ``(0, 10]`` ("" if none)."""
    bounds = {type(item).__name__: item for item in _constraints(model, loc)}
    if not bounds:
        return ""
    lower = bounds.get("Ge") or bounds.get("Gt")
    upper = bounds.get("Le") or bounds.get("Lt")
    left = (
        "(-inf"
        if lower is None
        else ("[" if "Ge" in bounds else "(")
        + _shown(getattr(lower, "ge", getattr(lower, "gt", None)))
    )
    right = (
        "inf)"
        if upper is None
        else _shown(getattr(upper, "le", getattr(upper, "lt", None)))
        + ("]" if "Le" in bounds else ")")
    )
    return f"{left}, {right}"


def _constraints(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[Any]:
    """The annotated-types constraints (Ge, Lt, ...) of the field, or list item, at ``loc``."""
    current: Any = model
    info: FieldInfo | None = None
    item = False
    for part in loc:
        fields = getattr(current, "model_fields", None)
        if isinstance(part, str) and isinstance(fields, dict) and part in fields:
            info, item = fields[part], False
            current = info.annotation
        elif isinstance(part, int):
            item = True
    if info is None:
        return []
    return _annotated_metadata(info.annotation) if item else list(info.metadata)


def _annotated_metadata(annotation: Any) -> list[Any]:
    """Constraints declared inside a type, e.g. on the items of ``list[Annotated[int, ...]]``."""
    found: list[Any] = []
    for arg in get_args(annotation):
        if isinstance(arg, FieldInfo):
            found += arg.metadata
        else:
            found += _annotated_metadata(arg)
    return found


def _shown(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def _where(loc: tuple[int | str, ...]) -> str:
    """``loc`` as a dotted path, without pydantic's union-member tags (``list[int]``)."""
    tags = {"bool", "int", "float", "str", "none"}
    return ".".join(
        str(part) for part in loc if not (isinstance(part, str) and ("[" in part or part in tags))
    )


def _unknown_key(model: type[BaseModel], loc: tuple[int | str, ...]) -> str:
    """Why a key is unknown, and where it belongs when another section has it."""
    key = str(loc[-1])
    if model is not SimulationConfig:
        return f"unknown option '{key}'"
    homes = [
        f"{name}.{key}"
        for name, field in SimulationConfig.model_fields.items()
        if isinstance(field.annotation, type)
        and issubclass(field.annotation, BaseModel)
        and key in field.annotation.model_fields
        and (name,) != tuple(loc[:-1])
    ]
    if len(loc) > 1 and key in SimulationConfig.model_fields:
        return f"unknown key; '{key}' belongs at the top level ({key})"
    if len(homes) == 1:
        section = homes[0].partition(".")[0]
        return f"unknown key; '{key}' belongs in section '{section}' ({homes[0]})"
    if homes:
        return f"unknown key; '{key}' belongs in a section: {', '.join(homes)}"
    return "unknown key (no section has it; see summary.json's config for the layout)"


def validated_options(owner: str, settings: type[BaseModel], options: dict) -> BaseModel:
    """``settings(**options)``, or a one-line :class:`ConfigError` naming ``owner``'s option.

    Every plug-in (unlearner, verifier) validates its user-given options this way.
    """
    try:
        return settings(**options)
    except ValidationError as err:
        raise ConfigError(error_line(err, settings, f"{owner} option ")) from None
