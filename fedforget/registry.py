"""One name -> entry registry, used by every extension point.

Unlearners, GAN unlearners, verifiers, models and dataset sources are each looked up by name
in a :class:`Registry`. One class means one set of rules for all of them: a name is taken
once (re-registering the same entry is harmless, e.g. when a module is imported again;
another entry under a taken name needs ``replace=True``), an unknown name is a one-line
:class:`UnknownNameError` that lists the known names, and :func:`load_plugins` imports the
user's modules so that their entries register themselves.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from typing import Generic, TypeVar

from fedforget.errors import ConfigError

__all__ = ["Registry", "UnknownNameError", "load_plugins"]

T = TypeVar("T")
E = TypeVar("E")


class UnknownNameError(ConfigError, KeyError):
    """No entry is registered under the requested name (a user error, one line).

    It is both a :class:`ConfigError` (a bad configuration value) and a :class:`KeyError` (a
    failed look-up), so callers may catch either.
    """

    def __str__(self) -> str:
        # KeyError.__str__ would wrap the message in quotes.
        return str(self.args[0]) if self.args else ""


def _as_is(name: str) -> str:
    return name


class Registry(MutableMapping[str, T], Generic[T]):
    """Entries of one extension point, by name.

    Parameters
    ----------
    kind : str
        What the entries are ("unlearner", "model", ...), for error messages.
    error : type of UnknownNameError
        Raised by :meth:`lookup` for an unknown name; extension points keep their own
        subclass so that existing ``except`` clauses keep working.
    normalize : callable, optional
        Maps a name to its key (e.g. ``str.lower`` for case-insensitive dataset names).
    """

    def __init__(
        self,
        kind: str,
        *,
        error: type[UnknownNameError] = UnknownNameError,
        normalize: Callable[[str], str] = _as_is,
    ) -> None:
        self.kind = kind
        self.error = error
        self.normalize = normalize
        self._entries: dict[str, T] = {}

    # -- the mapping (tests snapshot and restore a registry through it) -----------------

    def __getitem__(self, name: str) -> T:
        return self._entries[self.normalize(name)]

    def __setitem__(self, name: str, entry: T) -> None:
        self._entries[self.normalize(name)] = entry

    def __delitem__(self, name: str) -> None:
        del self._entries[self.normalize(name)]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.normalize(name) in self._entries

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"

    # -- registering and looking up -------------------------------------------------------

    def add(self, name: str, entry: E, *, replace: bool = False) -> E:
        """Register ``entry`` under ``name`` and return it.

        Raises
        ------
        ValueError
            If ``name`` is empty, or taken by another entry and ``replace`` is false.
        """
        key = self.normalize(name)
        if not key:
            raise ValueError(f"{self.kind} name must be a non-empty string")
        taken = self._entries.get(key)
        if taken is not None and taken is not entry and not replace:
            raise ValueError(f"{self.kind} {key!r} is already registered (pass replace=True)")
        self._entries[key] = entry  # type: ignore[assignment]
        return entry

    def register(self, entry: E) -> E:
        """Class decorator: register a class under its ``name`` attribute."""
        return self.add(entry.name, entry)  # type: ignore[attr-defined]

    def lookup(self, name: str) -> T:
        """The entry registered under ``name``, or a one-line error listing the known names."""
        key = self.normalize(name)
        if key not in self._entries:
            raise self.error(f"unknown {self.kind} {name!r}; choose one of: {self._listing()}")
        return self._entries[key]

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def _listing(self) -> str:
        return ", ".join(self.names()) or "(none registered)"


def load_plugins(modules: Iterable[str]) -> None:
    """Import the user's modules, whose entries register themselves on import.

    The current working folder is searched too (after the installed packages): a user runs
    ``fedforget simulate --config run.toml`` next to ``my_models.py``, and the console
    script's own folder, not the working one, heads ``sys.path``. Any failure of the import
    (a missing module, a syntax error, an exception the module raises) is a user error.

    Raises
    ------
    ConfigError
        One line naming the first module that cannot be imported, and why.
    """
    modules = list(modules)
    if modules:
        _search_working_folder()
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise ConfigError(f"plugin module {module!r} cannot be imported: {err}") from None
        except Exception as err:  # the user's module failed on import: say where, in one line
            raise ConfigError(
                f"plugin module {module!r} failed on import: {type(err).__name__}: "
                f"{_first_line(err)}{_where_raised(err)}"
            ) from None


def _search_working_folder() -> None:
    folder = os.getcwd()
    if folder not in sys.path and "" not in sys.path:
        sys.path.append(folder)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else ""


def _where_raised(err: BaseException) -> str:
    """`` (file.py:12)``: the innermost frame of ``err``'s traceback (a SyntaxError names its
    own line)."""
    if isinstance(err, SyntaxError):
        return ""
    frames = traceback.extract_tb(err.__traceback__)
    return f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""
