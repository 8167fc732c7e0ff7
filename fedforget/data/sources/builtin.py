"""The other built-in datasets: scikit-learn digits, Fashion-MNIST, CIFAR-10 and CIFAR-100."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import ClassVar

import numpy as np

from fedforget.data.sources.base import (
    ArrayDataset,
    DataError,
    DatasetBundle,
    DatasetSource,
    DataShape,
)
from fedforget.data.sources.readers import (
    IDX_FILES,
    NO_FILES,
    bundle_from_uint8,
    find_idx_files,
    first_line,
    idx_arrays,
    load_pickle,
    torchvision_download,
)
from fedforget.data.sources.registry import register_source


@register_source("digits")
class DigitsSource(DatasetSource):
    """scikit-learn's 8x8 digits (1797 images, 10 classes), split 80/20 stratified.

    Parameters
    ----------
    seed : int, default 0
        Seed of the train/test split.
    test_fraction : float, default 0.2
        Share of samples held out for testing.
    data_dir : Path or str, optional
        Unused (the data ships with scikit-learn).
    """

    shape = DataShape(channels=1, size=8, num_classes=10)

    def __init__(
        self, *, seed: int = 0, test_fraction: float = 0.2, data_dir: Path | str | None = None
    ) -> None:
        super().__init__(data_dir=data_dir)
        self.seed = seed
        self.test_fraction = test_fraction

    def load(self) -> DatasetBundle:
        """Load and split the digits."""
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        x = (digits.images.astype(np.float32) / np.float32(16.0))[:, None, :, :]
        y = digits.target.astype(np.int64)
        x_tr, x_te, y_tr, y_te = train_test_split(
            x, y, test_size=self.test_fraction, stratify=y, random_state=self.seed
        )
        train = ArrayDataset(np.ascontiguousarray(x_tr), y_tr)
        test = ArrayDataset(np.ascontiguousarray(x_te), y_te)
        return DatasetBundle("digits", train, test, num_classes=10)


@register_source("fashion-mnist")
class FashionMnistSource(DatasetSource):
    """Fashion-MNIST (1x28x28, 10 classes) from the standard IDX ``.gz`` files.

    The files are looked up in ``data_dir/fashion-mnist`` and ``data_dir/FashionMNIST/raw``
    (torchvision's layout, used when torchvision downloads them).
    """

    shape = DataShape(channels=1, size=28, num_classes=10)

    def load(self) -> DatasetBundle:
        """Load Fashion-MNIST, downloading it with torchvision if possible."""
        folders = [self.data_dir / "fashion-mnist", self.data_dir / "FashionMNIST" / "raw"]
        files = find_idx_files(folders)
        reason = ""
        if files is None:
            reason = torchvision_download("FashionMNIST", self.data_dir) or NO_FILES
            files = find_idx_files(folders)
        if files is None:
            raise DataError(
                f"Fashion-MNIST not found: put {', '.join(f + '.gz' for f in IDX_FILES)} "
                f"in {folders[0]} ({reason})"
            )
        return bundle_from_uint8("fashion-mnist", idx_arrays(files), scale=1 / 255)


class _CifarSource(DatasetSource):
    """CIFAR from the python-pickle batches (``x`` as 3x32x32)."""

    folder: ClassVar[str]
    train_files: ClassVar[tuple[str, ...]]
    test_files: ClassVar[tuple[str, ...]]
    label_key: ClassVar[bytes]
    torchvision_cls: ClassVar[str]
    num_classes: ClassVar[int]

    def load(self) -> DatasetBundle:
        """Load CIFAR, downloading it with torchvision if possible."""
        folder = self.data_dir / self.folder
        reason = ""
        if not self._complete(folder):
            reason = torchvision_download(self.torchvision_cls, self.data_dir) or NO_FILES
        if not self._complete(folder):
            raise DataError(
                f"{self.name} not found: expected {', '.join(self.train_files + self.test_files)}"
                f" in {folder} ({reason})"
            )
        x_tr, y_tr = self._read(folder, self.train_files)
        x_te, y_te = self._read(folder, self.test_files)
        arrays = {"x_train": x_tr, "y_train": y_tr, "x_test": x_te, "y_test": y_te}
        return bundle_from_uint8(self.name, arrays, scale=1 / 255, num_classes=self.num_classes)

    def _complete(self, folder: Path) -> bool:
        return all((folder / f).is_file() for f in self.train_files + self.test_files)

    def _read(self, folder: Path, files: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for file in files:
            path = folder / file
            try:
                with open(path, "rb") as fh:
                    batch = load_pickle(fh, encoding="bytes")
                xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
                ys.append(np.asarray(batch[self.label_key], dtype=np.int64))
            except (OSError, EOFError, ValueError, KeyError, TypeError, pickle.PickleError) as exc:
                raise DataError(f"cannot read {path}: {first_line(exc)}") from exc
        return np.concatenate(xs), np.concatenate(ys)


@register_source("cifar10")
class Cifar10Source(_CifarSource):
    """CIFAR-10 from ``data_dir/cifar-10-batches-py`` (50k/10k, 3x32x32, 10 classes)."""

    folder = "cifar-10-batches-py"
    train_files = tuple(f"data_batch_{i}" for i in range(1, 6))
    test_files = ("test_batch",)
    label_key = b"labels"
    torchvision_cls = "CIFAR10"
    num_classes = 10
    shape = DataShape(channels=3, size=32, num_classes=10)


@register_source("cifar100")
class Cifar100Source(_CifarSource):
    """CIFAR-100 from ``data_dir/cifar-100-python`` (50k/10k, 3x32x32, 100 fine classes)."""

    folder = "cifar-100-python"
    train_files = ("train",)
    test_files = ("test",)
    label_key = b"fine_labels"
    torchvision_cls = "CIFAR100"
    num_classes = 100
    shape = DataShape(channels=3, size=32, num_classes=100)
