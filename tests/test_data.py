"""Tests for fedforget.data: dataset sources and partitioning."""

from __future__ import annotations

import gzip
import pickle
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from fedforget.data import (
    SOURCE_REGISTRY,
    ArrayDataset,
    DataError,
    DatasetBundle,
    DatasetSource,
    InMemorySource,
    UnknownDatasetError,
    build_source,
    default_data_dir,
    fetch_mnist,
    load_dataset,
    partition_indices,
    register_dataset,
    register_source,
    source_names,
)

RNG = np.random.default_rng(1234)


@pytest.fixture
def clean_registry() -> Iterator[None]:
    """Undo registrations made by a test."""
    snapshot = dict(SOURCE_REGISTRY)
    yield
    SOURCE_REGISTRY.clear()
    SOURCE_REGISTRY.update(snapshot)


def _images(n: int, shape: tuple[int, ...]) -> np.ndarray:
    return RNG.integers(0, 256, size=(n, *shape), dtype=np.uint8)


def _labels(n: int, num_classes: int) -> np.ndarray:
    return RNG.integers(0, num_classes, size=n).astype(np.int64)


def _small_dataset(n: int = 6) -> ArrayDataset:
    return ArrayDataset(RNG.random((n, 1, 4, 4), dtype=np.float32), _labels(n, 3))


def _one_line_error(excinfo: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(excinfo.value)
    assert message and "\n" not in message
    return message


# --------------------------------------------------------------------------------------
# Containers and registry
# --------------------------------------------------------------------------------------


def test_array_dataset_validates_and_subsets() -> None:
    data = _small_dataset(6)
    assert len(data) == 6
    part = data.subset(np.array([4, 1]))
    assert len(part) == 2
    np.testing.assert_array_equal(part.x[0], data.x[4])
    np.testing.assert_array_equal(part.y, data.y[[4, 1]])
    with pytest.raises(DataError):
        ArrayDataset(data.x.astype(np.float64), data.y)
    with pytest.raises(DataError):
        ArrayDataset(data.x, data.y[:5])
    with pytest.raises(DataError):
        ArrayDataset(data.x[:, 0], data.y)


def test_bundle_rejects_out_of_range_labels() -> None:
    data = _small_dataset()
    with pytest.raises(DataError):
        DatasetBundle("t", data, data, num_classes=int(data.y.max()))


def test_unknown_dataset_name() -> None:
    with pytest.raises(UnknownDatasetError) as excinfo:
        build_source("no-such-data")
    message = _one_line_error(excinfo)
    assert "no-such-data" in message and "choose one of" in message and "mnist" in message
    assert isinstance(excinfo.value, ValueError)


def test_builtin_names_registered() -> None:
    assert {"mnist", "digits", "fashion-mnist", "cifar10", "cifar100", "npz"} <= set(source_names())


def test_bad_option_is_data_error() -> None:
    with pytest.raises(DataError):
        build_source("digits", no_such_option=1)


def test_default_data_dir_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FEDFORGET_DATA", str(tmp_path))
    assert default_data_dir() == tmp_path
    monkeypatch.delenv("FEDFORGET_DATA")
    assert default_data_dir() == Path.home() / ".cache" / "fedforget"


def test_register_source_class(clean_registry: None) -> None:
    @register_source("Unit-Class")
    class _Source(DatasetSource):
        def __init__(self, *, size: int = 5, data_dir: Path | None = None) -> None:
            super().__init__(data_dir=data_dir)
            self.size = size

        def load(self) -> DatasetBundle:
            data = _small_dataset(self.size)
            return DatasetBundle("unit-class", data, data, num_classes=3)

    assert "unit-class" in source_names()
    assert len(load_dataset("unit-class", size=7).train) == 7

    class _Other(_Source):
        pass

    with pytest.raises(ValueError, match="already registered"):
        register_source("unit-class")(_Other)


def test_register_dataset_with_clients(clean_registry: None) -> None:
    clients = [_small_dataset(3), _small_dataset(5)]
    test = _small_dataset(4)
    register_dataset("unit-func", lambda: InMemorySource(test, test, 3, clients, "mine").load())
    bundle = load_dataset("unit-func")
    assert bundle.name == "mine"
    assert len(bundle.train) == 8
    assert bundle.client_indices is not None
    assert [len(i) for i in bundle.client_indices] == [3, 5]
    np.testing.assert_array_equal(bundle.train.subset(bundle.client_indices[1]).x, clients[1].x)


# --------------------------------------------------------------------------------------
# Built-in sources
# --------------------------------------------------------------------------------------


def test_digits_shapes_and_range() -> None:
    bundle = load_dataset("digits")
    assert bundle.train.x.shape == (1437, 1, 8, 8)
    assert bundle.test.x.shape == (360, 1, 8, 8)
    for part in (bundle.train, bundle.test):
        assert part.x.dtype == np.float32 and part.y.dtype == np.int64
        assert part.x.min() >= 0.0 and part.x.max() == 1.0
    assert bundle.num_classes == 10 and bundle.in_channels == 1 and bundle.image_size == 8
    assert bundle.client_indices is None
    # stratified: every class keeps roughly its 20 % share in the test set
    assert np.bincount(bundle.test.y, minlength=10).min() >= 34


def test_digits_split_is_seeded() -> None:
    a, b = load_dataset("digits", seed=0), load_dataset("digits", seed=0)
    c = load_dataset("digits", seed=1)
    np.testing.assert_array_equal(a.test.x, b.test.x)
    assert not np.array_equal(a.test.x, c.test.x)


def test_mnist_when_obtainable() -> None:
    try:
        fetch_mnist()
    except DataError as exc:
        pytest.skip(f"MNIST cannot be obtained here: {exc}")
    bundle = load_dataset("mnist")
    assert bundle.train.x.shape == (60000, 1, 28, 28)
    assert bundle.test.x.shape == (10000, 1, 28, 28)
    assert bundle.train.x.dtype == np.float32 and bundle.train.y.dtype == np.int64
    assert bundle.train.x.min() >= 0.0 and bundle.train.x.max() <= 1.0
    assert set(np.unique(bundle.train.y)) == set(range(10))
    assert set(np.unique(bundle.test.y)) == set(range(10))
    assert bundle.num_classes == 10


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, dtype=">i4").tobytes()
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_from_idx_files(tmp_path: Path) -> None:
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    x_tr, y_tr, x_te, y_te = (
        _images(12, (28, 28)),
        _labels(12, 10),
        _images(5, (28, 28)),
        _labels(5, 10),
    )
    _write_idx(folder / "train-images-idx3-ubyte.gz", x_tr)
    _write_idx(folder / "train-labels-idx1-ubyte.gz", y_tr)
    _write_idx(folder / "t10k-images-idx3-ubyte.gz", x_te)
    _write_idx(folder / "t10k-labels-idx1-ubyte.gz", y_te)
    bundle = load_dataset("fashion-mnist", data_dir=tmp_path)
    assert bundle.train.x.shape == (12, 1, 28, 28)
    np.testing.assert_allclose(bundle.test.x[:, 0] * 255, x_te, atol=1e-3)
    np.testing.assert_array_equal(bundle.train.y, y_tr)


def test_mnist_from_local_idx_files(tmp_path: Path) -> None:
    x_tr, y_tr, x_te, y_te = (
        _images(7, (28, 28)),
        _labels(7, 10),
        _images(3, (28, 28)),
        _labels(3, 10),
    )
    for stem, array in [
        ("train-images-idx3-ubyte", x_tr),
        ("train-labels-idx1-ubyte", y_tr),
        ("t10k-images-idx3-ubyte", x_te),
        ("t10k-labels-idx1-ubyte", y_te),
    ]:
        _write_idx(tmp_path / f"{stem}.gz", array)
    cache = fetch_mnist(tmp_path)
    assert cache == tmp_path / "mnist.npz" and cache.is_file()
    bundle = load_dataset("mnist", data_dir=tmp_path)
    assert bundle.train.x.shape == (7, 1, 28, 28)
    np.testing.assert_array_equal(np.rint(bundle.train.x[:, 0] * 255), x_tr)
    np.testing.assert_array_equal(bundle.test.y, y_te)


def test_cifar10_from_pickle_batches(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": _images(3, (3072,)), b"labels": _labels(3, 10).tolist()}
        batches[name] = batch
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    bundle = load_dataset("cifar10", data_dir=tmp_path)
    assert bundle.train.x.shape == (15, 3, 32, 32) and bundle.test.x.shape == (3, 3, 32, 32)
    assert bundle.num_classes == 10 and bundle.in_channels == 3 and bundle.image_size == 32
    expected = batches["test_batch"][b"data"].reshape(3, 3, 32, 32) / 255
    np.testing.assert_allclose(bundle.test.x, expected, atol=1e-6)


def test_missing_builtin_files_raise(tmp_path: Path) -> None:
    for name in ("cifar10", "cifar100", "fashion-mnist"):
        with pytest.raises(DataError) as excinfo:
            load_dataset(name, data_dir=tmp_path)
        assert str(tmp_path) in _one_line_error(excinfo)


def test_pickle_with_code_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    evil = pickle.dumps({b"data": Path("x"), b"fine_labels": [0]}, protocol=2)
    (folder / "train").write_bytes(evil)
    (folder / "test").write_bytes(evil)
    with pytest.raises(DataError) as excinfo:
        load_dataset("cifar100", data_dir=tmp_path)
    assert "refusing" in _one_line_error(excinfo)


# --------------------------------------------------------------------------------------
# Custom .npz data
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "expected"),
    [((8, 8), (1, 8, 8)), ((1, 8, 8), (1, 8, 8)), ((8, 8, 3), (3, 8, 8)), ((3, 8, 8), (3, 8, 8))],
)
def test_npz_single_file_layouts(
    tmp_path: Path, shape: tuple[int, ...], expected: tuple[int, ...]
) -> None:
    x_tr, x_te = _images(10, shape), _images(4, shape)
    y_tr, y_te = np.arange(10) % 3, np.array([0, 1, 3, 4])  # classes 0-4, each present
    path = tmp_path / "data.npz"
    np.savez(path, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
    bundle = load_dataset("npz", path=path)
    assert bundle.train.x.shape == (10, *expected) and bundle.test.x.shape == (4, *expected)
    assert bundle.train.x.dtype == np.float32 and bundle.train.y.dtype == np.int64
    assert bundle.num_classes == 5 and bundle.client_indices is None
    back = np.rint(bundle.train.x * 255).astype(np.uint8)
    if len(shape) == 3 and shape[-1] == 3:
        back = back.transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(back.reshape(x_tr.shape), x_tr)
    np.testing.assert_array_equal(bundle.test.y, y_te)


def test_npz_float_pixels_and_num_classes_option(tmp_path: Path) -> None:
    x = RNG.random((6, 1, 5, 5)).astype(np.float64)
    path = tmp_path / "float.npz"
    np.savez(path, x_train=x, y_train=np.arange(6) % 2, x_test=x[:2], y_test=np.array([0, 1]))
    bundle = load_dataset("npz", path=path, num_classes=7)
    assert bundle.num_classes == 7
    np.testing.assert_allclose(bundle.train.x, x.astype(np.float32))


def test_npz_client_folder(tmp_path: Path) -> None:
    sizes = {0: 3, 1: 4, 2: 2, 10: 5}  # client_10 must come after client_2
    clients = {}
    for cid, n in sizes.items():
        clients[cid] = (_images(n, (6, 6)), _labels(n, 4))
        np.savez(tmp_path / f"client_{cid}.npz", x=clients[cid][0], y=clients[cid][1])
    np.savez(tmp_path / "test.npz", x=_images(4, (6, 6)), y=np.array([0, 1, 2, 3]))
    bundle = load_dataset("npz", path=str(tmp_path))
    assert bundle.client_indices is not None
    assert [len(i) for i in bundle.client_indices] == [3, 4, 2, 5]
    assert len(bundle.train) == 14 and bundle.test.x.shape == (4, 1, 6, 6)
    for indices, cid in zip(bundle.client_indices, sorted(sizes), strict=True):
        assert indices.dtype == np.int64
        part = bundle.train.subset(indices)
        np.testing.assert_array_equal(np.rint(part.x[:, 0] * 255), clients[cid][0])
        np.testing.assert_array_equal(part.y, clients[cid][1])


def test_npz_not_a_zip(tmp_path: Path) -> None:
    path = tmp_path / "broken.npz"
    path.write_bytes(b"this is not an npz file")
    with pytest.raises(DataError) as excinfo:
        load_dataset("npz", path=path)
    assert "broken.npz" in _one_line_error(excinfo)


@pytest.mark.parametrize(
    ("arrays", "fragment"),
    [
        ({"x_train": np.zeros((2, 4, 4)), "y_train": np.zeros(2)}, "x_test"),
        (
            {"x_train": np.full((2, 4, 4), 3.0), "y_train": [0, 1], "x_test": np.zeros((1, 4, 4))},
            "[0, 1]",
        ),
        ({"x_train": np.zeros((2, 4)), "y_train": [0, 1], "x_test": np.zeros((1, 4))}, "shape"),
        ({"x_train": np.zeros((2, 4, 4)), "y_train": [0], "x_test": np.zeros((1, 4, 4))}, "2"),
        (
            {"x_train": np.zeros((2, 4, 4)), "y_train": [0, -1], "x_test": np.zeros((1, 4, 4))},
            ">= 0",
        ),
    ],
)
def test_npz_malformed(tmp_path: Path, arrays: dict[str, object], fragment: str) -> None:
    arrays = {"y_test": np.array([0]), **arrays}
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)  # type: ignore[arg-type]
    with pytest.raises(DataError) as excinfo:
        load_dataset("npz", path=path)
    message = _one_line_error(excinfo)
    assert "bad.npz" in message and fragment in message


def test_npz_folder_problems(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="client_"):
        load_dataset("npz", path=tmp_path)
    np.savez(tmp_path / "client_0.npz", x=_images(2, (4, 4)), y=np.array([0, 1]))
    with pytest.raises(DataError, match=r"test\.npz"):
        load_dataset("npz", path=tmp_path)
    with pytest.raises(DataError, match="not found"):
        load_dataset("npz", path=tmp_path / "missing.npz")
    with pytest.raises(DataError, match="path="):
        load_dataset("npz")


def test_npz_num_classes_too_small(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    x = _images(3, (4, 4))
    np.savez(path, x_train=x, y_train=np.array([0, 1, 5]), x_test=x, y_test=np.array([0, 1, 2]))
    with pytest.raises(DataError, match="num_classes"):
        load_dataset("npz", path=path, num_classes=3)


def _single_file(path: Path, y_train: list[int], y_test: list[int]) -> Path:
    x = _images(len(y_train), (4, 4))
    np.savez(path, x_train=x, y_train=y_train, x_test=x[: len(y_test)], y_test=y_test)
    return path


def _client_folder(folder: Path, labels: list[list[int]], test: list[int]) -> Path:
    folder.mkdir()
    for cid, y in enumerate(labels):
        np.savez(folder / f"client_{cid}.npz", x=_images(len(y), (4, 4)), y=np.array(y))
    np.savez(folder / "test.npz", x=_images(len(test), (4, 4)), y=np.array(test))
    return folder


def test_a_label_beyond_the_declared_classes_names_its_file_and_the_range(
    tmp_path: Path,
) -> None:
    path = _single_file(tmp_path / "d.npz", [0, 1, 2, 9], [0, 1])
    with pytest.raises(DataError) as excinfo:
        load_dataset("npz", path=path, num_classes=9)
    message = _one_line_error(excinfo)
    assert "d.npz y_train: label 9 is out of range for num_classes=9 (labels are 0..8)" in message
    folder = _client_folder(tmp_path / "f", [[0, 1], [2, 12]], [0, 1, 2])
    with pytest.raises(DataError) as excinfo:
        load_dataset("npz", path=folder, num_classes=10)
    assert "client_1.npz y: label 12 is out of range" in _one_line_error(excinfo)


def test_a_stray_label_above_the_classes_is_refused_unless_the_classes_are_declared(
    tmp_path: Path,
) -> None:
    digits = list(range(10))
    path = _single_file(tmp_path / "d.npz", [*digits, 12], digits)
    with pytest.raises(DataError) as excinfo:
        load_dataset("npz", path=path)
    message = _one_line_error(excinfo)
    assert "no sample has label 10, 11, yet label 12 makes 13 classes" in message
    assert "--num-classes" in message
    assert load_dataset("npz", path=path, num_classes=13).num_classes == 13
    folder = _client_folder(tmp_path / "f", [digits[:5], [*digits[5:], 12]], digits)
    with pytest.raises(DataError, match="no sample has label 10, 11"):
        load_dataset("npz", path=folder)
    whole = _client_folder(tmp_path / "g", [digits[:5], digits[5:]], digits)
    assert load_dataset("npz", path=whole).num_classes == 10


# --------------------------------------------------------------------------------------
# Partitioning
# --------------------------------------------------------------------------------------

BALANCED = np.repeat(np.arange(10), 300)[RNG.permutation(3000)]


def _max_class_share(labels: np.ndarray, parts: list[np.ndarray]) -> float:
    return float(np.mean([np.bincount(labels[p]).max() / len(p) for p in parts]))


@pytest.mark.parametrize("scheme", ["iid", "dirichlet", "shards"])
def test_partitions_disjoint_sorted_and_seeded(scheme: str) -> None:
    parts = partition_indices(BALANCED, 10, scheme, seed=3)  # type: ignore[arg-type]
    assert len(parts) == 10
    joined = np.concatenate(parts)
    assert len(np.unique(joined)) == len(joined)
    assert joined.min() >= 0 and joined.max() < len(BALANCED)
    for part in parts:
        assert part.dtype == np.int64 and len(part) > 0
        assert np.all(np.diff(part) > 0)
    if scheme != "shards":
        assert len(joined) == len(BALANCED)
    again = partition_indices(BALANCED, 10, scheme, seed=3)  # type: ignore[arg-type]
    other = partition_indices(BALANCED, 10, scheme, seed=4)  # type: ignore[arg-type]
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other, strict=True))


def test_iid_is_balanced() -> None:
    parts = partition_indices(BALANCED, 10, "iid", seed=0)
    assert {len(p) for p in parts} == {300}
    assert _max_class_share(BALANCED, parts) < 0.25


def test_dirichlet_small_alpha_is_skewed() -> None:
    iid = _max_class_share(BALANCED, partition_indices(BALANCED, 10, "iid", seed=0))
    skewed = partition_indices(BALANCED, 10, "dirichlet", seed=0, alpha=0.1)
    assert _max_class_share(BALANCED, skewed) > iid + 0.25


def test_shards_limit_classes_per_partition() -> None:
    labels = np.repeat(np.arange(10), 100)[RNG.permutation(1000)]
    # 10 partitions x 2 shards of 50 samples: every shard holds a single class
    parts = partition_indices(labels, 10, "shards", seed=0, shards_per_partition=2)
    assert [len(p) for p in parts] == [100] * 10
    assert all(len(np.unique(labels[p])) <= 2 for p in parts)


def test_partition_errors() -> None:
    with pytest.raises(DataError, match="scheme"):
        partition_indices(BALANCED, 10, "random", seed=0)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="num_partitions"):
        partition_indices(BALANCED[:5], 10, "iid", seed=0)
    with pytest.raises(DataError, match="alpha"):
        partition_indices(BALANCED, 10, "dirichlet", seed=0, alpha=0.0)
    two_classes = np.repeat([0, 1], 20)
    with pytest.raises(DataError, match="dirichlet") as excinfo:
        partition_indices(two_classes, 10, "dirichlet", seed=0, alpha=0.001)
    _one_line_error(excinfo)


def test_partition_60k_is_fast() -> None:
    labels = RNG.integers(0, 10, 60000)
    partition_indices(labels[:100], 2, "iid", seed=0)  # pay the one-off import cost
    for scheme in ("iid", "dirichlet", "shards"):
        start = time.perf_counter()
        parts = partition_indices(labels, 20, scheme, seed=0)  # type: ignore[arg-type]
        assert time.perf_counter() - start < 5.0, scheme
        assert len(parts) == 20
