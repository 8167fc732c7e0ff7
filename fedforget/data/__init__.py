"""Datasets for fedforget: sources (what to load) and partitioning (who holds what)."""

from fedforget.data.partition import PartitionScheme, partition_indices
from fedforget.data.sources import (
    SOURCE_REGISTRY,
    ArrayDataset,
    Cifar10Source,
    Cifar100Source,
    DataError,
    DatasetBundle,
    DatasetSource,
    DigitsSource,
    FashionMnistSource,
    InMemorySource,
    MnistSource,
    NpzSource,
    UnknownDatasetError,
    build_source,
    default_data_dir,
    fetch_mnist,
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
    "DatasetBundle",
    "DatasetSource",
    "DigitsSource",
    "FashionMnistSource",
    "InMemorySource",
    "MnistSource",
    "NpzSource",
    "PartitionScheme",
    "UnknownDatasetError",
    "build_source",
    "default_data_dir",
    "fetch_mnist",
    "load_dataset",
    "partition_indices",
    "register_dataset",
    "register_source",
    "source_names",
]

from fedforget.data.deletion import (
    DeletionPlan,
    Federation,
    apply_trigger,
    build_federation,
    plan_deletion,
)

__all__ += ["DeletionPlan", "Federation", "apply_trigger", "build_federation", "plan_deletion"]
