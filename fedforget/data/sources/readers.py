"""File readers and array converters shared by the built-in sources.

IDX and pickle files, ``.npz`` archives and torchvision downloads are turned into the
validated arrays of :class:`ArrayDataset`; every failure is a one-line :class:`DataError`.
"""

from __future__ import annotations

import codecs
import gzip
import importlib
import logging
import os
import pickle
import re
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from fedforget.data.sources.base import ArrayDataset, DataError, DatasetBundle

LOG = logging.getLogger("fedforget.data.sources")

NO_FILES = "the torchvision download left no usable files"
IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def to_images(x: np.ndarray, where: str) -> np.ndarray:
    """Convert images to float32 ``(N, C, H, W)`` in ``[0, 1]``.

    Accepts ``(N, H, W)``, ``(N, C, H, W)`` or ``(N, H, W, C)`` with ``C`` in {1, 3};
    integer pixels must be 0-255 and are divided by 255, float pixels must be in [0, 1].
    """
    if x.ndim == 3:
        x = x[:, None, :, :]
    elif x.ndim == 4 and x.shape[1] not in (1, 3) and x.shape[3] in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    elif x.ndim != 4 or x.shape[1] not in (1, 3):
        raise DataError(
            f"{where}: images must be (N,H,W), (N,C,H,W) or (N,H,W,C) with C in 1/3; "
            f"got shape {x.shape}"
        )
    if len(x) == 0:
        return np.zeros(x.shape, dtype=np.float32)
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        raise DataError(f"{where}: pixel values must be finite; found NaN or infinity")
    lo, hi = x.min(), x.max()
    if np.issubdtype(x.dtype, np.integer):
        if lo < 0 or hi > 255:
            raise DataError(f"{where}: integer pixels must be 0-255; got range [{lo}, {hi}]")
        return np.ascontiguousarray(x, dtype=np.float32) / np.float32(255.0)
    if np.issubdtype(x.dtype, np.floating):
        if not (lo >= 0.0 and hi <= 1.0):
            raise DataError(
                f"{where}: float pixels must lie in [0, 1]; got range [{lo}, {hi}] "
                "(save uint8 0-255 or scale them)"
            )
        return np.ascontiguousarray(x, dtype=np.float32)
    raise DataError(f"{where}: unsupported image dtype {x.dtype}")


def to_labels(y: np.ndarray, where: str) -> np.ndarray:
    """Convert labels to int64 ``(N,)``; accepts integers or whole-valued floats."""
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{where}: labels must be 1-D class ids; got shape {y.shape}")
    if np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0):
        y = y.astype(np.int64)
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{where}: labels must be integer class ids; got dtype {y.dtype}")
    if len(y) and y.min() < 0:
        raise DataError(f"{where}: label {y.min()} is negative; labels are class ids >= 0")
    return y.astype(np.int64)


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` through a temporary file so concurrent readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; the cache may be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class ArrayUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds numpy arrays (pickles from the web can run code)."""

    def find_class(self, module: str, name: str) -> Any:
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name in (
            "_reconstruct",
            "scalar",
        ):
            for mod in ("numpy._core.multiarray", "numpy.core.multiarray"):
                try:
                    return getattr(importlib.import_module(mod), name)
                except (ImportError, AttributeError):
                    continue
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if (module, name) == ("_codecs", "encode"):  # how protocol-2 pickles store bytes
            return codecs.encode
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")


def load_pickle(fh: IO[bytes], encoding: str) -> Any:
    return ArrayUnpickler(fh, encoding=encoding).load()


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (``.gz`` or plain) as used by MNIST and Fashion-MNIST."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path}: not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">i4", count=ndim, offset=4)
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{path}: IDX payload does not match header shape {tuple(dims)}")
    return data.reshape(tuple(int(d) for d in dims))


def find_idx_files(folders: Sequence[Path]) -> dict[str, Path] | None:
    """Return the four IDX files from the first folder that holds all of them."""
    for folder in folders:
        found: dict[str, Path] = {}
        for stem in IDX_FILES:
            for candidate in (folder / f"{stem}.gz", folder / stem):
                if candidate.is_file():
                    found[stem] = candidate
                    break
        if len(found) == len(IDX_FILES):
            return found
    return None


def idx_arrays(files: dict[str, Path]) -> dict[str, np.ndarray]:
    """Decode the four IDX files into uint8 images and int64 labels."""
    try:
        arrays = {stem: read_idx(path) for stem, path in files.items()}
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read IDX files: {first_line(exc)}") from exc
    return {
        "x_train": arrays["train-images-idx3-ubyte"],
        "y_train": arrays["train-labels-idx1-ubyte"].astype(np.int64),
        "x_test": arrays["t10k-images-idx3-ubyte"],
        "y_test": arrays["t10k-labels-idx1-ubyte"].astype(np.int64),
    }


def torchvision_download(dataset_cls: str, root: Path) -> str | None:
    """Download a dataset with torchvision if it is importable.

    Returns
    -------
    str or None
        ``None`` on success, else why it did not work (for error messages).
    """
    try:
        tv_datasets = importlib.import_module("torchvision.datasets")
    except Exception as exc:  # a broken torchvision install raises anything, not ImportError
        return f"torchvision unavailable: {first_line(exc)}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        for train in (True, False):
            getattr(tv_datasets, dataset_cls)(root=str(root), train=train, download=True)
    except Exception as exc:  # network, checksum, disk errors, ...
        LOG.warning("torchvision download of %s failed: %s", dataset_cls, first_line(exc))
        return f"torchvision download failed: {first_line(exc)}"
    return None


def bundle_from_uint8(
    name: str, arrays: dict[str, np.ndarray], scale: float, num_classes: int | None = None
) -> DatasetBundle:
    """Build a bundle from uint8 NCHW/NHW arrays; pixels are multiplied by ``scale``.

    ``num_classes`` defaults to the largest label + 1.
    """

    def images(x: np.ndarray) -> np.ndarray:
        x = x[:, None] if x.ndim == 3 else x
        return x.astype(np.float32) * np.float32(scale)

    train = ArrayDataset(images(arrays["x_train"]), arrays["y_train"].astype(np.int64))
    test = ArrayDataset(images(arrays["x_test"]), arrays["y_test"].astype(np.int64))
    if num_classes is None:
        num_classes = int(max(train.y.max(), test.y.max())) + 1
    return DatasetBundle(name, train, test, num_classes)


def natural_key(path: Path) -> list[int | str]:
    """Sort key putting ``client_2`` before ``client_10``."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", path.name)]


def read_npz(path: Path, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """Read the named arrays from an ``.npz`` file, raising one-line ``DataError``s."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in keys if k not in npz.files]
            if missing:
                raise DataError(
                    f"{path}: missing array(s) {', '.join(missing)}; expected {', '.join(keys)}"
                )
            return {k: npz[k] for k in keys}
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"cannot read {path}: {first_line(exc)}") from exc


def array_dataset(x: np.ndarray, y: np.ndarray, path: Path, suffix: str) -> ArrayDataset:
    """Validate and convert raw arrays from ``path`` (``suffix`` names the keys in messages)."""
    images = to_images(x, f"{path} x{suffix}")
    labels = to_labels(y, f"{path} y{suffix}")
    if len(images) != len(labels):
        raise DataError(f"{path}: x{suffix} has {len(images)} samples but y{suffix} {len(labels)}")
    return ArrayDataset(images, labels)
