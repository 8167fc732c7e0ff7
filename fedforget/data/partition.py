"""Split a training set among clients with Flower Datasets' partitioners.

The partitioners run on a tiny in-memory ``datasets.Dataset`` holding only the labels and
the original row numbers, so the images never leave NumPy.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Literal, get_args

import numpy as np

from fedforget.data.sources import DataError

if TYPE_CHECKING:
    from datasets import Dataset
    from flwr_datasets.partitioner import Partitioner

__all__ = ["PartitionScheme", "partition_indices"]

PartitionScheme = Literal["iid", "dirichlet", "shards"]

# Dirichlet partitions smaller than this are resampled (capped for small datasets).
_DIRICHLET_MIN_SIZE = 10


def partition_indices(
    labels: np.ndarray,
    num_partitions: int,
    scheme: PartitionScheme,
    seed: int,
    alpha: float = 0.5,
    shards_per_partition: int = 2,
) -> list[np.ndarray]:
    """Assign sample indices to ``num_partitions`` clients.

    Parameters
    ----------
    labels : np.ndarray
        Integer class labels, shape ``(N,)``.
    num_partitions : int
        Number of clients.
    scheme : {"iid", "dirichlet", "shards"}
        ``iid``: a seeded shuffle cut into equal parts. ``dirichlet``: per-class shares
        drawn from Dir(``alpha``) (smaller ``alpha`` = more label skew). ``shards``: the data
        sorted by label, cut into ``num_partitions * shards_per_partition`` equal shards,
        each client gets ``shards_per_partition`` random ones (McMahan et al., 2017).
    seed : int
        Random seed; the same seed gives the same partition.
    alpha : float, default 0.5
        Dirichlet concentration (``dirichlet`` only).
    shards_per_partition : int, default 2
        Shards per client (``shards`` only).

    Returns
    -------
    list of np.ndarray
        One sorted int64 index array per client. The arrays are disjoint; for ``iid`` and
        ``dirichlet`` they cover every sample, ``shards`` drops the remainder of
        ``N / (num_partitions * shards_per_partition)``.

    Raises
    ------
    DataError
        If the arguments are invalid or the partition cannot be created.
    """
    labels = _check_args(labels, num_partitions, scheme, alpha, shards_per_partition)
    from datasets import Dataset  # heavy import, only needed here

    columns = {"label": labels, "idx": np.arange(len(labels), dtype=np.int64)}
    # Arrow format keeps column reads vectorised; the default format converts row by row.
    dataset = Dataset.from_dict(columns).with_format("arrow")
    if scheme == "iid":
        return _iid(dataset, num_partitions, seed)
    if scheme == "dirichlet":
        return _dirichlet(dataset, num_partitions, seed, alpha)
    return _shards(dataset, num_partitions, seed, shards_per_partition)


def _check_args(
    labels: np.ndarray, num_partitions: int, scheme: str, alpha: float, shards: int
) -> np.ndarray:
    """Validate the arguments; return the labels as int64."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"labels must be a 1-D integer array; got {labels.dtype} {labels.shape}")
    if scheme not in get_args(PartitionScheme):
        choices = ", ".join(get_args(PartitionScheme))
        raise DataError(f"unknown partition scheme {scheme!r}; choose one of: {choices}")
    if not 1 <= num_partitions <= len(labels):
        raise DataError(f"num_partitions must be in [1, {len(labels)}]; got {num_partitions}")
    if scheme == "dirichlet" and not alpha > 0:
        raise DataError(f"dirichlet alpha must be > 0; got {alpha}")
    if scheme == "shards" and shards < 1:
        raise DataError(f"shards_per_partition must be >= 1; got {shards}")
    return labels.astype(np.int64, copy=False)


def _collect(partitioner: Partitioner, num_partitions: int) -> list[np.ndarray]:
    """Read the original row numbers of every partition, sorted."""
    return [
        np.sort(partitioner.load_partition(pid).with_format("arrow")["idx"].to_numpy())
        for pid in range(num_partitions)
    ]


def _iid(dataset: Dataset, num_partitions: int, seed: int) -> list[np.ndarray]:
    from flwr_datasets.partitioner import IidPartitioner

    # IidPartitioner cuts contiguous blocks, so shuffling first is what makes it random.
    partitioner = IidPartitioner(num_partitions=num_partitions)
    partitioner.dataset = dataset.shuffle(seed=seed)
    return _collect(partitioner, num_partitions)


def _dirichlet(dataset: Dataset, num_partitions: int, seed: int, alpha: float) -> list[np.ndarray]:
    from flwr_datasets.partitioner import DirichletPartitioner

    n = len(dataset)
    preferred = max(1, min(_DIRICHLET_MIN_SIZE, n // (2 * num_partitions)))
    # Fall back to "non-empty" before giving up: a tiny alpha rarely meets a larger minimum.
    for min_size in sorted({preferred, 1}, reverse=True):
        partitioner = DirichletPartitioner(
            num_partitions=num_partitions,
            partition_by="label",
            alpha=alpha,
            min_partition_size=min_size,
            seed=seed,
        )
        partitioner.dataset = dataset
        try:
            with warnings.catch_warnings():
                # It warns on every resampling attempt; the outcome is reported below.
                warnings.simplefilter("ignore", UserWarning)
                return _collect(partitioner, num_partitions)
        except ValueError:
            continue
    raise DataError(
        f"dirichlet partitioning (alpha={alpha}) left some of the {num_partitions} partitions "
        "empty after repeated sampling; increase alpha or use fewer partitions"
    )


def _shards(
    dataset: Dataset, num_partitions: int, seed: int, shards_per_partition: int
) -> list[np.ndarray]:
    from flwr_datasets.partitioner import ShardPartitioner

    n = len(dataset)
    if n < num_partitions * shards_per_partition:
        raise DataError(
            f"shards: {n} samples cannot fill {num_partitions} x {shards_per_partition} shards"
        )
    partitioner = ShardPartitioner(
        num_partitions=num_partitions,
        partition_by="label",
        num_shards_per_partition=shards_per_partition,
        seed=seed,
    )
    partitioner.dataset = dataset
    try:
        with warnings.catch_warnings():
            # datasets' label sort trips a pyarrow deprecation warning that users can't act on.
            warnings.simplefilter("ignore", FutureWarning)
            return _collect(partitioner, num_partitions)
    except ValueError as exc:
        raise DataError(f"shard partitioning failed: {str(exc).splitlines()[0]}") from exc
