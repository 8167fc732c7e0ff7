"""Data the caller already holds in memory, optionally split per client."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from fedforget.data.sources.base import ArrayDataset, DataError, DatasetBundle, DatasetSource


class InMemorySource(DatasetSource):
    """A source wrapping arrays you already hold (not registered; build it directly).

    Parameters
    ----------
    train, test : ArrayDataset
        Training and test data. Ignored for training if ``client_datasets`` is given.
    num_classes : int
        Number of classes.
    client_datasets : list of ArrayDataset, optional
        One dataset per client. They are concatenated into the bundle's ``train`` and
        ``client_indices`` records which rows belong to which client (``train`` is then
        not used).
    name : str, default "custom"
        Name given to the bundle.
    """

    def __init__(
        self,
        train: ArrayDataset,
        test: ArrayDataset,
        num_classes: int,
        client_datasets: list[ArrayDataset] | None = None,
        name: str = "custom",
    ) -> None:
        super().__init__(data_dir=None)
        self.train = train
        self.test = test
        self.num_classes = num_classes
        self.client_datasets = client_datasets
        self.dataset_name = name

    def load(self) -> DatasetBundle:
        """Return the wrapped arrays as a bundle."""
        if self.client_datasets is None:
            return DatasetBundle(self.dataset_name, self.train, self.test, self.num_classes)
        train, client_indices = join_clients(self.client_datasets)
        return DatasetBundle(self.dataset_name, train, self.test, self.num_classes, client_indices)


def join_clients(parts: Sequence[ArrayDataset]) -> tuple[ArrayDataset, list[np.ndarray]]:
    """Concatenate per-client datasets; return the joint set and each client's rows."""
    if not parts:
        raise DataError("client_datasets is empty")
    shapes = {p.x.shape[1:] for p in parts}
    if len(shapes) != 1:
        raise DataError(f"client datasets have different image shapes: {sorted(shapes)}")
    bounds = np.cumsum([0] + [len(p) for p in parts])
    indices = [np.arange(a, b, dtype=np.int64) for a, b in itertools.pairwise(bounds)]
    joined = ArrayDataset(
        np.concatenate([p.x for p in parts]), np.concatenate([p.y for p in parts])
    )
    return joined, indices
