"""Your own arrays from ``.npz`` files: one file, or one file per client plus a test file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedforget.data.sources.base import ArrayDataset, DataError, DatasetBundle, DatasetSource
from fedforget.data.sources.memory import join_clients
from fedforget.data.sources.readers import array_dataset, natural_key, read_npz
from fedforget.data.sources.registry import register_source


@register_source("npz")
class NpzSource(DatasetSource):
    """Your own data from ``.npz`` files.

    ``path`` is either

    * one ``.npz`` file with arrays ``x_train, y_train, x_test, y_test``, or
    * a folder with ``client_*.npz`` files (arrays ``x``, ``y``; one per client, taken in
      natural order: client_2 before client_10) and ``test.npz`` (``x``, ``y``). This fixes
      each client's data: the bundle's ``client_indices`` is set.

    Images may be ``(N, H, W)``, ``(N, C, H, W)`` or ``(N, H, W, C)`` with ``C`` in {1, 3};
    uint8 0-255 (scaled to [0, 1]) or float already in [0, 1]. Labels are class ids.

    Parameters
    ----------
    path : Path or str
        The file or folder.
    num_classes : int, optional
        Defaults to the largest label + 1 over train and test.
    data_dir : Path or str, optional
        Unused.
    """

    def __init__(
        self,
        *,
        path: Path | str | None = None,
        num_classes: int | None = None,
        data_dir: Path | str | None = None,
    ) -> None:
        super().__init__(data_dir=data_dir)
        self.path = Path(path).expanduser() if path is not None else None
        self.num_classes = num_classes

    def load(self) -> DatasetBundle:
        """Read the file(s) and validate them."""
        if self.path is None:
            raise DataError(
                "dataset 'npz' needs option path=<file.npz or folder of client_*.npz + test.npz>"
            )
        if self.path.is_dir():
            train, test, client_indices = self._load_folder(self.path)
        elif self.path.is_file():
            arrays = read_npz(self.path, ("x_train", "y_train", "x_test", "y_test"))
            train = array_dataset(arrays["x_train"], arrays["y_train"], self.path, "_train")
            test = array_dataset(arrays["x_test"], arrays["y_test"], self.path, "_test")
            client_indices = None
        else:
            raise DataError(f"npz dataset path not found: {self.path}")
        return DatasetBundle("npz", train, test, self._num_classes(train, test), client_indices)

    def _load_folder(self, folder: Path) -> tuple[ArrayDataset, ArrayDataset, list[np.ndarray]]:
        files = client_files(folder)
        if not files:
            raise DataError(f"{folder}: no client_*.npz files found")
        test_file = folder / "test.npz"
        if not test_file.is_file():
            raise DataError(f"{folder}: test.npz is missing")
        clients = []
        for file in files:
            part = load_xy_npz(file)
            if len(part) == 0:
                raise DataError(f"{file}: holds no samples")
            if clients and part.x.shape[1:] != clients[0].x.shape[1:]:
                raise DataError(
                    f"{file}: image shape {part.x.shape[1:]} differs from "
                    f"{files[0].name} {clients[0].x.shape[1:]}"
                )
            clients.append(part)
        test = load_xy_npz(test_file)
        train, client_indices = join_clients(clients)
        return train, test, client_indices

    def _num_classes(self, train: ArrayDataset, test: ArrayDataset) -> int:
        labels = [d.y.max() for d in (train, test) if len(d)]
        needed = int(max(labels)) + 1 if labels else 1
        if self.num_classes is None:
            return needed
        if self.num_classes < needed:
            raise DataError(
                f"{self.path}: num_classes={self.num_classes} but labels go up to {needed - 1}"
            )
        return int(self.num_classes)


def client_files(folder: Path) -> list[Path]:
    """The ``client_*.npz`` files of a folder source, in client order (client_2 before 10)."""
    return sorted(folder.glob("client_*.npz"), key=natural_key)


def load_xy_npz(path: Path) -> ArrayDataset:
    """One ``.npz`` file of arrays ``x`` and ``y``, validated as :class:`NpzSource` does."""
    arrays = read_npz(path, ("x", "y"))
    return array_dataset(arrays["x"], arrays["y"], path, "")
