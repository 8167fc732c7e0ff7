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
from fedforget.data.partition import partition_indices
from fedforget.data.sources import ArrayDataset, DatasetBundle, build_source

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
class DeletionPlan:
    """Which training samples are deleted, held by which clients.

    Attributes
    ----------
    mode : str
        ``backdoor``, ``random``, ``class`` or ``client``.
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
    def deleting_clients(self) -> list[int]:
        """Partition ids that hold deleted samples."""
        return sorted(cid for cid, idx in self.forget_by_client.items() if len(idx))

    @property
    def forget_indices(self) -> np.ndarray:
        """All deleted global indices, sorted."""
        parts = list(self.forget_by_client.values())
        return np.sort(np.concatenate(parts)) if parts else np.empty(0, dtype=np.int64)


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
        """Triggered test samples whose true label is not the target, labelled with the target."""
        target = self.plan.backdoor_target
        if target is None:
            return None
        keep = self.test.y != target
        x = apply_trigger(self.test.x[keep], self.trigger_size)
        return ArrayDataset(x=x, y=np.full(int(keep.sum()), target, dtype=np.int64))

    def class_test_split(self) -> tuple[ArrayDataset | None, ArrayDataset]:
        """(D_tf, D_tr): test samples of the forgotten classes (class mode) and of the others."""
        classes = list(self.plan.forget_classes)
        if not classes:
            return None, self.test
        forgotten = np.isin(self.test.y, classes)
        return self.test.subset(np.flatnonzero(forgotten)), self.test.subset(
            np.flatnonzero(~forgotten)
        )


def plan_deletion(
    bundle: DatasetBundle, client_indices: list[np.ndarray], config: SimulationConfig
) -> DeletionPlan:
    """Choose D_f for the configured mode.

    ``backdoor`` and ``random`` draw ``count`` (when set) or ``share`` x N samples uniformly
    from the deleting clients' data (backdoor: only samples whose label is not the target,
    since relabelling those would be no attack); ``class`` takes every sample of the
    forgotten classes held by the deleting clients (by default all clients: category
    unlearning); ``client`` takes the deleting clients' whole data.

    Raises
    ------
    ConfigError
        If a forget class or the backdoor target is out of range, or if the deleting clients
        hold fewer eligible samples than the requested share.
    """
    deletion = config.deletion
    num_classes = bundle.num_classes
    rng = np.random.default_rng(config.seed + 7919)
    labels = bundle.train.y
    if deletion.mode == "class":
        bad = [c for c in deletion.forget_classes if not 0 <= c < num_classes]
        if bad:
            raise ConfigError(f"forget class {bad[0]} is out of range [0, {num_classes - 1}]")
        chosen = {
            cid: client_indices[cid][np.isin(labels[client_indices[cid]], deletion.forget_classes)]
            for cid in config.deleting_client_ids()
        }
        return DeletionPlan("class", _nonempty(chosen), tuple(sorted(deletion.forget_classes)))
    if deletion.mode == "requests":  # real nodes file their own requests (fedforget.node)
        return DeletionPlan("requests", {})
    if deletion.mode == "client":
        leaving = config.deleting_client_ids()
        if len(leaving) >= len(client_indices):
            raise ConfigError("mode 'client' needs at least one client that stays")
        return DeletionPlan("client", {cid: client_indices[cid] for cid in leaving})
    target = deletion.backdoor_target if deletion.mode == "backdoor" else None
    if target is not None and target >= num_classes:
        raise ConfigError(f"backdoor target {target} is out of range [0, {num_classes - 1}]")
    return DeletionPlan(
        deletion.mode,
        _draw_samples(labels, client_indices, config, target, rng),
        backdoor_target=target,
    )


def _draw_samples(
    labels: np.ndarray,
    client_indices: list[np.ndarray],
    config: SimulationConfig,
    target: int | None,
    rng: np.random.Generator,
) -> dict[int, np.ndarray]:
    clients = config.deleting_client_ids()
    pools = [client_indices[cid] for cid in clients]
    if target is not None:
        pools = [pool[labels[pool] != target] for pool in pools]
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
    return _nonempty(
        {cid: np.sort(pool[picked][owners[picked] == cid]).astype(np.int64) for cid in clients}
    )


def _nonempty(chosen: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    return {cid: idx.astype(np.int64) for cid, idx in chosen.items() if len(idx)}


def _poison(train: ArrayDataset, plan: DeletionPlan, trigger_size: int) -> ArrayDataset:
    if plan.backdoor_target is None:
        return train
    idx = plan.forget_indices
    x = train.x.copy()
    y = train.y.copy()
    x[idx] = apply_trigger(train.x[idx], trigger_size)
    y[idx] = plan.backdoor_target
    return ArrayDataset(x=x, y=y)


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
            seed=config.seed,
            alpha=data.alpha,
            shards_per_partition=data.shards_per_client,
        )
    plan = plan_deletion(bundle, client_indices, config)
    trigger = config.deletion.trigger_size
    test, validation = split_validation(bundle.test, config.data.validation_share, config.seed)
    return Federation(
        name=bundle.name,
        train=_poison(bundle.train, plan, trigger),
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
    rng = np.random.default_rng([config.seed, 7919])
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
