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

from fedforget.data.sources.base import (
    ArrayDataset,
    DataError,
    DatasetBundle,
    DatasetSource,
    DataShape,
    UnknownDatasetError,
    default_data_dir,
)
from fedforget.data.sources.builtin import (
    Cifar10Source,
    Cifar100Source,
    DigitsSource,
    FashionMnistSource,
)
from fedforget.data.sources.memory import InMemorySource
from fedforget.data.sources.mnist import MnistSource, fetch_mnist
from fedforget.data.sources.npz import NpzSource, load_xy_npz
from fedforget.data.sources.registry import (
    SOURCE_REGISTRY,
    build_source,
    load_dataset,
    register_dataset,
    register_source,
    source_names,
)

__all__ = [
    "SOURCE_REGISTRY",
    "ArrayDataset",
    "Cifar10Source",
    "Cifar100Source",
    "DataError",
    "DataShape",
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
    "load_xy_npz",
    "register_dataset",
    "register_source",
    "source_names",
]
