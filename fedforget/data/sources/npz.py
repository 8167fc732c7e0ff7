"""Your own arrays from ``.npz`` files: one file, or one file per client plus a test file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedforget.config import MAX_CLASSES
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
                "dataset 'npz' needs a path (path=, --data-path): a .npz file, or a folder of "
                "client_*.npz and test.npz"
            )
        if self.path.is_dir():
            train, test, client_indices, labels = self._load_folder(self.path)
        elif self.path.is_file():
            arrays = read_npz(self.path, ("x_train", "y_train", "x_test", "y_test"))
            train = array_dataset(arrays["x_train"], arrays["y_train"], self.path, "_train")
            test = array_dataset(arrays["x_test"], arrays["y_test"], self.path, "_test")
            client_indices = None
            labels = {f"{self.path} y_train": train.y, f"{self.path} y_test": test.y}
        elif self.path.exists():
            raise DataError(f"npz dataset path {self.path}: not a regular file or a folder")
        else:
            raise DataError(f"npz dataset path not found: {self.path}")
        num_classes = checked_classes(labels, self.num_classes, str(self.path))
        return DatasetBundle("npz", train, test, num_classes, client_indices)

    def _load_folder(
        self, folder: Path
    ) -> tuple[ArrayDataset, ArrayDataset, list[np.ndarray], dict[str, np.ndarray]]:
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
        labels = {f"{file} y": part.y for file, part in zip(files, clients, strict=True)}
        return train, test, client_indices, {**labels, f"{test_file} y": test.y}


def checked_classes(labels: dict[str, np.ndarray], declared: int | None, where: str) -> int:
    """The number of classes: ``declared``, or the largest label + 1; one clear error otherwise.

    A label at or above the declared number is refused (naming the file). Without a declared
    number, a class that no sample of any file has below the largest label is refused too: a
    stray label (a 12 among the digits 0-9) would otherwise add classes that no client can
    learn, silently. Declaring ``num_classes`` accepts such a gap.

    Parameters
    ----------
    labels : dict of str to np.ndarray
        Each file's (and array's) labels, by a name for messages.
    declared : int, optional
        The number of classes the user declared.
    where : str
        The data's path, for the gap message.
    """
    present = [y for y in labels.values() if len(y)]
    if declared is not None and not 1 <= declared <= MAX_CLASSES:
        raise DataError(f"{where}: num_classes={declared} is outside [1, {MAX_CLASSES}]")
    if declared is not None:
        for name, y in labels.items():
            if len(y) and y.max() >= declared:
                raise DataError(
                    f"{name}: label {int(y.max())} is out of range for num_classes={declared} "
                    f"(labels are 0..{declared - 1})"
                )
        return int(declared)
    needed = int(max(y.max() for y in present)) + 1 if present else 1
    seen = np.unique(np.concatenate(present)) if present else np.arange(1)
    missing = np.setdiff1d(np.arange(needed), seen).tolist()  # labels < MAX_CLASSES (to_labels)
    if missing:
        shown = ", ".join(map(str, missing[:5])) + (", ..." if len(missing) > 5 else "")
        raise DataError(
            f"{where}: no sample has label {shown}, yet label {needed - 1} makes {needed} "
            f"classes; fix the labels, or declare the classes (num_classes, --num-classes)"
        )
    return needed


def client_files(folder: Path) -> list[Path]:
    """The ``client_*.npz`` files of a folder source, in client order (client_2 before 10)."""
    return sorted(folder.glob("client_*.npz"), key=natural_key)


def load_xy_npz(path: Path) -> ArrayDataset:
    """One ``.npz`` file of arrays ``x`` and ``y``, validated as :class:`NpzSource` does."""
    arrays = read_npz(path, ("x", "y"))
    return array_dataset(arrays["x"], arrays["y"], path, "")
