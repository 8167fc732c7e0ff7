"""Parsers of the command line's compact values: shares, counts, id lists, method options."""

from __future__ import annotations

import json
from typing import Any

from fedforget.config import ConfigError


def parse_share(text: str) -> float:
    """``"6%"`` -> 0.06, ``"0.06"`` -> 0.06; anything else is a :class:`ConfigError`."""
    raw = text.strip()
    try:
        if raw.endswith("%"):
            return float(raw[:-1]) / 100
        value = float(raw)
    except ValueError:
        raise ConfigError(
            f"--delete expects a share such as 6% or 0.06, or a count such as 64, got '{text}'"
        ) from None
    if value >= 1:
        raise ConfigError(f"--delete {text} is ambiguous; write {value:g}% or {value / 100:g}")
    return value


def parse_delete(text: str) -> dict[str, float | int]:
    """``--delete``: a share (``"6%"``, ``"0.06"``) or a sample count (``"64"``)."""
    raw = text.strip()
    if raw.isdigit() and int(raw) >= 1:
        return {"count": int(raw)}
    return {"share": parse_share(raw)}


def parse_ids(text: str | None, what: str = "client ids") -> list[int] | None:
    """``"0,1,4"`` -> [0, 1, 4]; ``what`` names the ids in the error message."""
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"expected comma-separated {what}, got '{text}'") from None


def parse_client_groups(text: str | None) -> list[int] | list[list[int]] | None:
    """``"0,1"`` -> [0, 1]; ``"5/6,7"`` -> [[5], [6, 7]] (one group per deletion step)."""
    if text is None or "/" not in text:
        return parse_ids(text)
    return [parse_ids(part) or [] for part in text.split("/")]


def parse_rounds(text: str | int) -> int | list[int]:
    """``"7"`` -> 7; ``"4,7"`` -> [4, 7] (sequential deletion steps)."""
    rounds = parse_ids(str(text), "deletion rounds") or []
    if not rounds:
        raise ConfigError(f"expected a deletion round or comma-separated rounds, got '{text}'")
    return rounds[0] if len(rounds) == 1 else rounds


def parse_options(items: list[str] | None, strategy: str) -> dict[str, dict[str, Any]]:
    """``["lau.alpha=0.5", "epochs=3"]`` -> ``{"lau": {"alpha": 0.5}, strategy: {"epochs": 3}}``.

    A key without a ``name.`` prefix belongs to ``strategy``; values are read as JSON when
    they parse (numbers, true/false, null), else kept as text.
    """
    options: dict[str, dict[str, Any]] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--option expects NAME.KEY=VALUE or KEY=VALUE, got '{item}'")
        name, _, field = key.strip().rpartition(".")
        try:
            value = json.loads(text)
        except (json.JSONDecodeError, RecursionError):
            value = text
        options.setdefault(name or strategy, {})[field] = value
    return options
