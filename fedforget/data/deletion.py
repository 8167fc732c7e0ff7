"""Deletion plans, backdoor triggers and the simulated federation's data.

A :class:`Federation` is the whole simulated world: the training set (with the backdoor already
stamped on the samples that will be deleted, paper 000 "Sample unlearning"), each client's
partition, the deletion plan and the test set. It is a pure function of the configuration, so
every Ray actor and the server rebuild the same one; :func:`build_federation` caches it per
process. Protocol code must only read a client's own slice (:meth:`Federation.client_data`);
the server-side metrics use the rest as the experimenter's view.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from fedforget.config import ConfigError, SimulationConfig
from fedforget.data.modes import DeletionPlan, apply_trigger, deletion_mode
from fedforget.data.partition import partition_indices
from fedforget.data.sources import ArrayDataset, DatasetBundle, build_source


def triggered_samples(
    data: ArrayDataset, target: int, trigger_size: int, count: int, seed: int
) -> ArrayDataset:
    """``count`` seeded samples of ``data`` outside class ``target``, triggered and relabelled.

    What a backdoor deletion's D_f looks like when the poisoned training samples themselves
    are not at hand (e.g. a standalone ``fedforget verify``): the trigger stamped on images
    of the other classes, labelled with the backdoor's target class.
    """
    rng = np.random.default_rng(seed)
    pool = np.flatnonzero(data.y != target)
    chosen = data.subset(np.sort(rng.choice(pool, min(count, len(pool)), False)))
    return ArrayDataset(
        x=apply_trigger(chosen.x, trigger_size), y=np.full(len(chosen), target, dtype=np.int64)
    )


@dataclass(frozen=True)
class Federation:
    """The simulated federation: data, partitions and the deletion plan."""

    name: str
    train: ArrayDataset
    test: ArrayDataset
    num_classes: int
    client_indices: list[np.ndarray]
    plan: DeletionPlan
    trigger_size: int
    validation: ArrayDataset | None = None
    """The server's declared validation set (held out of the test set), if any."""
    _forget_mask: np.ndarray = field(repr=False, default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        mask = np.zeros(len(self.train), dtype=bool)
        mask[self.plan.forget_indices] = True
        object.__setattr__(self, "_forget_mask", mask)

    @property
    def num_clients(self) -> int:
        """Number of clients."""
        return len(self.client_indices)

    @property
    def in_channels(self) -> int:
        """Image channels."""
        return int(self.train.x.shape[1])

    @property
    def image_size(self) -> int:
        """Image height (images are square)."""
        return int(self.train.x.shape[2])

    def client_forget_indices(self, cid: int) -> np.ndarray:
        """Global indices of client ``cid``'s deleted samples (empty if none)."""
        return self.plan.forget_by_client.get(cid, np.empty(0, dtype=np.int64))

    def client_data(self, cid: int, drop_deleted: bool) -> tuple[ArrayDataset, np.ndarray]:
        """Client ``cid``'s local data and the global indices of its samples.

        Parameters
        ----------
        cid : int
            Partition id.
        drop_deleted : bool
            Leave out the client's deleted samples (after its deletion was carried out).
        """
        indices = self.client_indices[cid]
        if drop_deleted:
            indices = indices[~self._forget_mask[indices]]
        return self.train.subset(indices), indices

    def is_deleted(self, indices: np.ndarray) -> np.ndarray:
        """Boolean mask: which of these global indices belong to D_f."""
        return self._forget_mask[indices]

    def forget_set(self) -> ArrayDataset:
        """D_f as the clients hold it (triggered and relabelled in backdoor mode)."""
        return self.train.subset(self.plan.forget_indices)

    def retain_indices(self) -> np.ndarray:
        """Global indices of D_r (every training sample not deleted)."""
        return np.flatnonzero(~self._forget_mask)

    def backdoor_test_set(self) -> ArrayDataset | None:
        """Test data that measures the attack D_f planted (the backdoor: triggered test
        samples whose true label is not the target, labelled with the target)."""
        return self.plan.deletion_mode.attack_test_set(self)

    def class_test_split(self) -> tuple[ArrayDataset | None, ArrayDataset]:
        """(D_tf, D_tr): test data standing for what was forgotten (a class deletion's
        classes) and for what was kept (:mod:`fedforget.data.modes`)."""
        mode = self.plan.deletion_mode
        return mode.forget_test_set(self), mode.retain_test_set(self)


def plan_deletion(
    bundle: DatasetBundle, client_indices: list[np.ndarray], config: SimulationConfig
) -> DeletionPlan:
    """Choose D_f as the configured mode plans it (:meth:`DeletionMode.plan`).

    Raises
    ------
    ConfigError
        If the data cannot carry the deletion (a forget class or the backdoor target out of
        range, the deleting clients hold fewer eligible samples than requested, ...).
    """
    return deletion_mode(config.deletion.mode).plan(bundle, client_indices, config)


_FEDERATIONS: dict[str, Federation] = {}
_CACHE_SIZE = 2


def build_federation(config: SimulationConfig) -> Federation:
    """Build (or fetch from this process's cache) the federation of a configuration.

    Ray actors serve many simulated clients across rounds: caching here means a partition is
    built once per actor, not once per message.
    """
    key = config.model_dump_json(include={"clients", "seed", "data", "deletion"})
    if key not in _FEDERATIONS:
        if len(_FEDERATIONS) >= _CACHE_SIZE:
            _FEDERATIONS.clear()
        _FEDERATIONS[key] = _build(config)
    return _FEDERATIONS[key]


def resolve_training(config: SimulationConfig) -> SimulationConfig:
    """``config`` with an unset batch size and local epochs derived from its clients' data.

    :meth:`fedforget.config.TrainConfig.resolved` on the federation's client sizes; a run
    resolves once, before its first message, and records the values it used.
    """
    if config.train.is_resolved:
        return config
    sizes = [len(indices) for indices in build_federation(config).client_indices]
    return config.model_copy(update={"train": config.train.resolved(sizes)})


def _build(config: SimulationConfig) -> Federation:
    data = config.data
    source = build_source(data.dataset, **source_options(config))
    bundle = source.load()
    if config.data.train_samples is not None:
        bundle = replace(bundle, train=bundle.train.subset(kept_train_indices(bundle, config)))
    if bundle.client_indices is not None:
        if len(bundle.client_indices) != config.clients:
            raise ConfigError(
                f"dataset '{data.dataset}' brings {len(bundle.client_indices)} client datasets "
                f"but --clients is {config.clients}"
            )
        client_indices = list(bundle.client_indices)
    else:
        client_indices = partition_indices(
            bundle.train.y,
            config.clients,
            data.partition,
            seed=config.data_seed,
            alpha=data.alpha,
            shards_per_partition=data.shards_per_client,
        )
    plan = plan_deletion(bundle, client_indices, config)
    trigger = config.deletion.trigger_size
    test, validation = split_validation(bundle.test, config.data.validation_share, config.data_seed)
    return Federation(
        name=bundle.name,
        train=plan.deletion_mode.prepare_train(bundle, plan, config),
        test=test,
        num_classes=bundle.num_classes,
        client_indices=client_indices,
        plan=plan,
        trigger_size=trigger,
        validation=validation,
    )


def split_validation(
    test: ArrayDataset, share: float, seed: int
) -> tuple[ArrayDataset, ArrayDataset]:
    """``(test, validation)``: a seeded ``share`` of the test set held out for the server.

    The experimenter declares the validation set to the server, which may read it (it is
    never client data); no metric is measured on it, so the test metrics stay unbiased.
    """
    count = round(share * len(test))
    order = np.random.default_rng(seed).permutation(len(test))
    held = np.sort(order[:count])
    rest = np.sort(order[count:])
    return test.subset(rest), test.subset(held)


def kept_train_indices(bundle: DatasetBundle, config: SimulationConfig) -> np.ndarray:
    """The sorted training indices that ``data.train_samples`` keeps (a draw seeded by ``seed``).

    Its complement is data no client holds: auxiliary data, e.g. for the reference models
    of the calibrated membership attack (:mod:`fedforget.attacks`).
    """
    n = len(bundle.train)
    wanted = config.data.train_samples
    if wanted is None:
        return np.arange(n)
    if bundle.client_indices is not None:
        raise ConfigError(
            f"dataset '{config.data.dataset}' brings its clients' data: drop train_samples"
        )
    if wanted > n:
        raise ConfigError(f"train_samples {wanted} exceeds the {n} training samples")
    rng = np.random.default_rng([config.data_seed, 7919])
    return np.sort(rng.choice(n, wanted, replace=False))


def source_options(config: SimulationConfig) -> dict:
    """The dataset source's options that a configuration sets (data folder, file, classes)."""
    options: dict = {}
    if config.data.data_dir is not None:
        options["data_dir"] = config.data.data_dir
    if config.data.path is not None:
        options["path"] = config.data.path
    if config.data.num_classes is not None:
        options["num_classes"] = config.data.num_classes
    return options
