"""The dataset-source registry: name -> :class:`DatasetSource` class, and plain loaders."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from fedforget.data.sources.base import DataError, DatasetBundle, DatasetSource, UnknownDatasetError
from fedforget.registry import Registry

SourceT = TypeVar("SourceT", bound=type[DatasetSource])


def _normalize(name: str) -> str:
    return name.strip().lower()


SOURCE_REGISTRY: Registry[type[DatasetSource]] = Registry(
    "dataset", error=UnknownDatasetError, normalize=_normalize
)


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
        SOURCE_REGISTRY.add(key, cls, replace=replace)
        cls.name = key
        return cls

    return decorator


source_names = SOURCE_REGISTRY.names


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
    source = SOURCE_REGISTRY.lookup(name)
    try:
        return source(**options)
    except TypeError as exc:
        raise DataError(f"invalid options for dataset {_normalize(name)!r}: {exc}") from exc


def load_dataset(name: str, **options: Any) -> DatasetBundle:
    """Shorthand for ``build_source(name, **options).load()``."""
    return build_source(name, **options).load()


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
