"""What every dataset source produces: arrays, bundles, the source interface and its errors."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, NamedTuple

import numpy as np

from fedforget.registry import UnknownNameError


class DataError(ValueError):
    """A dataset cannot be found, read or validated (the message is one line)."""


class UnknownDatasetError(UnknownNameError, DataError):
    """No dataset source is registered under the requested name."""


@dataclass(frozen=True)
class ArrayDataset:
    """Images and labels held in memory.

    Parameters
    ----------
    x : np.ndarray
        float32 images of shape ``(N, C, H, W)`` with values in ``[0, 1]`` (the range is
        checked by the loaders, not here, to keep :meth:`subset` cheap).
    y : np.ndarray
        int64 labels of shape ``(N,)``.

    Raises
    ------
    DataError
        If shapes or dtypes are wrong or ``x`` and ``y`` differ in length.
    """

    x: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        if not isinstance(self.x, np.ndarray) or not isinstance(self.y, np.ndarray):
            raise DataError("ArrayDataset needs numpy arrays for x and y")
        if self.x.ndim != 4 or self.x.dtype != np.float32:
            raise DataError(
                f"ArrayDataset x must be float32 (N, C, H, W); got {self.x.dtype} {self.x.shape}"
            )
        if self.y.ndim != 1 or self.y.dtype != np.int64:
            raise DataError(f"ArrayDataset y must be int64 (N,); got {self.y.dtype} {self.y.shape}")
        if len(self.x) != len(self.y):
            raise DataError(f"ArrayDataset has {len(self.x)} images but {len(self.y)} labels")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, indices: np.ndarray | Sequence[int]) -> ArrayDataset:
        """Return the samples at ``indices`` (a copy, in the given order).

        Parameters
        ----------
        indices : np.ndarray or sequence of int
            Positions into this dataset.

        Returns
        -------
        ArrayDataset
            The selected samples.
        """
        idx = np.asarray(indices, dtype=np.int64)
        if idx.ndim != 1:
            raise DataError(f"subset indices must be 1-D; got shape {idx.shape}")
        return ArrayDataset(self.x[idx], self.y[idx])

    @staticmethod
    def concatenate(parts: Sequence[ArrayDataset]) -> ArrayDataset:
        """The samples of ``parts`` (at least one), in their order, as one dataset."""
        return ArrayDataset(
            x=np.concatenate([part.x for part in parts]),
            y=np.concatenate([part.y for part in parts]),
        )


@dataclass(frozen=True)
class DatasetBundle:
    """A train/test pair plus what a federated run needs to know about it.

    Parameters
    ----------
    name : str
        Dataset name (for logs and result files).
    train, test : ArrayDataset
        The training and test sets; their images must have the same ``(C, H, W)``.
    num_classes : int
        Number of classes; every label is in ``[0, num_classes)``.
    client_indices : list of np.ndarray, optional
        Set only when the user supplied one dataset per client: disjoint int64 index
        arrays into ``train``, one per client. ``None`` means "partition ``train``".
    """

    name: str
    train: ArrayDataset
    test: ArrayDataset
    num_classes: int
    client_indices: list[np.ndarray] | None = None

    def __post_init__(self) -> None:
        if self.train.x.shape[1:] != self.test.x.shape[1:]:
            raise DataError(
                f"dataset {self.name!r}: train images {self.train.x.shape[1:]} and test images "
                f"{self.test.x.shape[1:]} differ in shape"
            )
        if self.num_classes < 1:
            raise DataError(f"dataset {self.name!r}: num_classes must be >= 1")
        for split, part in (("train", self.train), ("test", self.test)):
            if len(part) and (part.y.min() < 0 or part.y.max() >= self.num_classes):
                raise DataError(
                    f"dataset {self.name!r}: {split} labels must lie in [0, {self.num_classes})"
                )
        if self.client_indices is not None:
            _check_client_indices(self.name, self.client_indices, len(self.train))

    @property
    def in_channels(self) -> int:
        """Number of image channels ``C``."""
        return int(self.train.x.shape[1])

    @property
    def image_size(self) -> int:
        """Image height ``H`` (images are assumed square)."""
        return int(self.train.x.shape[2])


def _check_client_indices(name: str, client_indices: list[np.ndarray], n_train: int) -> None:
    """Raise ``DataError`` unless the per-client indices are disjoint int64 arrays in range."""
    if not client_indices:
        raise DataError(f"dataset {name!r}: client_indices is empty")
    for idx in client_indices:
        if not isinstance(idx, np.ndarray) or idx.ndim != 1 or idx.dtype != np.int64:
            raise DataError(f"dataset {name!r}: client_indices must be 1-D int64 arrays")
    joined = np.concatenate(client_indices)
    if len(joined) and (joined.min() < 0 or joined.max() >= n_train):
        raise DataError(f"dataset {name!r}: client_indices point outside the train set")
    if len(np.unique(joined)) != len(joined):
        raise DataError(f"dataset {name!r}: client_indices overlap")


class DataShape(NamedTuple):
    """The images' channels and side and the number of classes of a dataset.

    What a model's weights are sized by, so that weights can name the dataset they were
    trained on without its files being read (``fedforget verify`` without ``--dataset``).
    """

    channels: int
    size: int
    num_classes: int


class DatasetSource(ABC):
    """Something that can load a :class:`DatasetBundle`.

    Subclasses set the class attribute ``name`` (done by :func:`register_source`), take
    their options as keyword arguments and implement :meth:`load`. A source whose images
    and classes are fixed declares them in ``shape``; ``None`` where the user's files decide.

    Parameters
    ----------
    data_dir : Path or str, optional
        Folder holding downloaded or cached files; defaults to :func:`default_data_dir`.
    """

    name: ClassVar[str] = ""
    shape: ClassVar[DataShape | None] = None

    def __init__(self, *, data_dir: Path | str | None = None) -> None:
        self.data_dir = Path(data_dir).expanduser() if data_dir else default_data_dir()

    @abstractmethod
    def load(self) -> DatasetBundle:
        """Load the dataset.

        Returns
        -------
        DatasetBundle
            Train and test arrays plus metadata.

        Raises
        ------
        DataError
            If the data cannot be found, read or validated.
        """


def default_data_dir() -> Path:
    """Return ``$FEDFORGET_DATA`` if set, else ``~/.cache/fedforget``."""
    env = os.environ.get("FEDFORGET_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fedforget"
