"""Reading the files a user names on the command line, without ever blocking or recursing.

A path where a file is expected may be anything: a folder, a FIFO (reading one blocks until
a writer comes), a device (endless), a huge file, or text nested thousands of levels deep
(Python's parsers recurse). Each is refused with one line before it is read: the path is
stat'ed first, opened without blocking and stat'ed again (a file swapped in between is
caught), read up to a size limit, and parsed JSON/TOML is walked for its depth.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from fedforget.config import ConfigError

TEXT_LIMIT = 64 * 2**20
"""Bytes of a configuration or request file: 64 MiB holds ~8 million row ids."""
MAX_DEPTH = 32
"""Nesting of a configuration or request file: a configuration is 4 levels deep
(methods.options.NAME.KEY); 32 leaves room and stays far from Python's recursion limit."""


def check_user_file(path: Path, option: str) -> None:
    """Raise :class:`ConfigError` unless ``path`` is an existing regular file."""
    _regular(path, option, _stat(path, option))


def check_not_special(path: Path, option: str) -> None:
    """Raise :class:`ConfigError` when ``path`` exists but is no regular file (a missing one
    is left to its reader, which says what it expected)."""
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return
    except OSError as err:
        raise ConfigError(f"{option} {path}: {_reason(err)}") from None
    _regular(path, option, status)


def read_user_text(path: Path, option: str, limit: int = TEXT_LIMIT) -> str:
    """The UTF-8 text of the regular file ``path`` (at most ``limit`` bytes), else ConfigError."""
    _regular(path, option, _stat(path, option))
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as err:
        raise ConfigError(f"{option} {path}: {_reason(err)}") from None
    with os.fdopen(fd, "rb") as handle:
        _regular(path, option, os.fstat(handle.fileno()))  # the file opened is the file checked
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise ConfigError(f"{option} {path}: larger than {limit // 2**20} MiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{option} {path}: not UTF-8 text") from None


def parse_json(text: str, path: Path, option: str, what: str = "JSON") -> Any:
    """``text`` as JSON, refusing what nests deeper than :data:`MAX_DEPTH` in one line."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise ConfigError(f"{option} {path}: {what} nested too deeply") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"{option} {path}: not valid {what} ({err})") from None
    check_depth(value, path, option)
    return value


def parse_toml(text: str, path: Path, option: str) -> dict[str, Any]:
    """``text`` as TOML, refusing what nests deeper than :data:`MAX_DEPTH` in one line."""
    import tomllib

    try:
        value = tomllib.loads(text)
    except RecursionError:
        raise ConfigError(f"{option} {path}: TOML nested too deeply") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{option} {path}: not valid TOML ({err})") from None
    check_depth(value, path, option)
    return value


def check_depth(value: Any, path: Path, option: str) -> None:
    """Raise :class:`ConfigError` when lists and tables nest deeper than :data:`MAX_DEPTH`.

    Walked level by level (no recursion), so any depth is measured safely.
    """
    level, depth = [value], 0
    while containers := [item for item in level if isinstance(item, dict | list)]:
        depth += 1
        if depth > MAX_DEPTH:
            raise ConfigError(f"{option} {path}: nested more than {MAX_DEPTH} levels deep")
        level = [
            child
            for item in containers
            for child in (item.values() if isinstance(item, dict) else item)
        ]


def _stat(path: Path, option: str) -> os.stat_result:
    try:
        return os.stat(path)
    except OSError as err:
        raise ConfigError(f"{option} {path}: {_reason(err)}") from None


def _regular(path: Path, option: str, status: os.stat_result) -> None:
    if stat.S_ISDIR(status.st_mode):
        raise ConfigError(f"{option} {path}: a folder, not a file")
    if not stat.S_ISREG(status.st_mode):
        raise ConfigError(f"{option} {path}: not a regular file (a FIFO, socket or device)")


def _reason(err: OSError) -> str:
    return err.strerror or type(err).__name__
