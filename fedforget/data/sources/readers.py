"""File readers and array converters shared by the built-in sources.

IDX and pickle files, ``.npz`` archives and torchvision downloads are turned into the
validated arrays of :class:`ArrayDataset`; every failure is a one-line :class:`DataError`.
"""

from __future__ import annotations

import codecs
import gzip
import importlib
import logging
import math
import os
import pickle
import re
import stat
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from fedforget.config import MAX_CLASSES
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
    if x.shape[2] != x.shape[3]:
        raise DataError(
            f"{where}: images must be square (the models take H = W); got "
            f"{x.shape[2]}x{x.shape[3]} pixels"
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
    if len(y) and y.max() >= MAX_CLASSES:  # before anything sized by the labels is allocated
        raise DataError(
            f"{where}: label {y.max()} is beyond {MAX_CLASSES:,} classes (labels are class ids "
            f"0..{MAX_CLASSES - 1})"
        )
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
    """Read the named arrays from an ``.npz`` file, raising one-line ``DataError``s.

    The file must be a regular file holding a zip of ``.npy`` arrays (what ``np.savez``
    writes); each array's header is read first, so that an array this machine cannot hold
    (a forged or mistaken shape) is refused before anything is allocated for it.
    """
    check_regular_file(path)
    if not zipfile.is_zipfile(path):
        single = "; a .npy file holds a single array" if path.suffix.lower() == ".npy" else ""
        raise DataError(
            f"{path}: not an .npz archive (np.savez writes one, with arrays "
            f"{', '.join(keys)}{single})"
        )
    headers = npz_headers(path, keys)
    check_fits_in_memory(path, headers)
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in keys}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"cannot read {path}: {first_line(exc)}") from exc


def check_regular_file(path: Path) -> None:
    """Refuse a path that is not a regular file (a FIFO would block the reader forever)."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or first_line(exc)}") from exc
    if not stat.S_ISREG(mode):
        raise DataError(f"{path}: not a regular file")


def npz_headers(path: Path, keys: Sequence[str]) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """The shape and dtype of each array ``keys`` names, read from the archive's headers."""
    headers: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            missing = [k for k in keys if f"{k}.npy" not in names]
            if missing:
                raise DataError(
                    f"{path}: missing array(s) {', '.join(missing)}; expected {', '.join(keys)}"
                )
            for key in keys:
                with archive.open(f"{key}.npy") as member:
                    headers[key] = _npy_header(member)
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"cannot read {path}: {first_line(exc)}") from exc
    for key, (_, dtype) in headers.items():
        if dtype.hasobject:
            raise DataError(f"{path} {key}: holds Python objects; save numeric arrays")
    return headers


def _npy_header(member: IO[bytes]) -> tuple[tuple[int, ...], np.dtype]:
    version = np.lib.format.read_magic(member)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(member)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(member)
    else:
        raise ValueError(f"unsupported .npy format version {version}")
    return tuple(int(d) for d in shape), np.dtype(dtype)


def check_fits_in_memory(path: Path, headers: dict[str, tuple[tuple[int, ...], np.dtype]]) -> None:
    """Refuse arrays that, read and converted to float32 images, exceed the free memory."""
    needed = 0
    for key, (shape, dtype) in headers.items():
        count = math.prod(shape)
        needed += count * dtype.itemsize
        if key.startswith("x"):
            needed += count * 4  # the float32 copy the images become
    available = available_memory()
    if needed > available:
        raise DataError(
            f"{path}: its arrays need {needed / 2**30:.1f} GiB in memory (as read and as "
            f"float32 images); this machine has {available / 2**30:.1f} GiB available"
        )


def available_memory() -> int:
    """Bytes of memory available to a new allocation (psutil's estimate)."""
    import psutil

    return int(psutil.virtual_memory().available)


def array_dataset(x: np.ndarray, y: np.ndarray, path: Path, suffix: str) -> ArrayDataset:
    """Validate and convert raw arrays from ``path`` (``suffix`` names the keys in messages)."""
    images = to_images(x, f"{path} x{suffix}")
    labels = to_labels(y, f"{path} y{suffix}")
    if len(images) != len(labels):
        raise DataError(f"{path}: x{suffix} has {len(images)} samples but y{suffix} {len(labels)}")
    return ArrayDataset(images, labels)
