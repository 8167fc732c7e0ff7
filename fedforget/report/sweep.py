"""Tables of ``fedforget sweep``: per-cell rows, mean +- std over seeds, gaps to retrain.

A sweep row is one strategy in one cell (scenario x partition x seed): flat, numeric metrics
keyed ``<phase>.<metric>`` (``after_unlearning.test_accuracy``, ``end.backdoor_success``) plus
costs (``unlearning_seconds``, ``round_seconds``, ...). Everything here is plain Python on
those rows, so the same code summarises a sweep that ran or one read back from ``sweep.csv``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from fedforget.report.formatting import format_mia, is_mia_key, power_key

RETRAIN = "retrain"
CELL_KEYS = ("scenario", "partition", "seed")
GROUP_KEYS = ("scenario", "partition", "strategy")
GAP_PREFIX = "gap."


def is_number(value: Any) -> bool:
    """True for finite ints and floats (not bools, not None, not NaN)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return not math.isnan(value)


def add_gaps(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row with ``gap.<key>`` = its value minus the retrain row's in the same cell.

    Rows of a cell without a retrain row get no gaps. The retrain row's own gaps are 0.
    """
    reference = {
        tuple(row[k] for k in CELL_KEYS): row for row in rows if row["strategy"] == RETRAIN
    }
    out = []
    for row in rows:
        ref = reference.get(tuple(row[k] for k in CELL_KEYS))
        gaps = {}
        if ref is not None:
            for key, value in row.items():
                if key in CELL_KEYS or key.startswith(GAP_PREFIX):
                    continue
                if is_number(value) and is_number(ref.get(key)):
                    gaps[GAP_PREFIX + key] = value - ref[key]
        out.append({**row, **gaps})
    return out


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation of one metric over seeds."""

    mean: float
    std: float
    n: int
    low: float
    high: float

    def format(self, scale: float = 1.0, digits: int = 2) -> str:
        """``"98.12 +- 0.05"`` (``scale`` 100 for percentages)."""
        if self.n == 0:
            return "-"
        return f"{self.mean * scale:.{digits}f} ± {self.std * scale:.{digits}f}"


def stat(values: Sequence[float]) -> Stat:
    """Mean and sample standard deviation (0 for a single value)."""
    n = len(values)
    if n == 0:
        nan = float("nan")
        return Stat(nan, nan, 0, nan, nan)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return Stat(mean, math.sqrt(var), n, min(values), max(values))


def aggregate(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per (scenario, partition, strategy): every numeric key as a :class:`Stat`.

    Text fields that are the same in every seed (``mode``, ``dataset``) are kept as they are.
    """
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in GROUP_KEYS), []).append(row)
    out = []
    for key, members in groups.items():
        numeric = sorted({k for row in members for k, v in row.items() if is_number(v)} - {"seed"})
        entry: dict[str, Any] = dict(zip(GROUP_KEYS, key, strict=True))
        entry["seeds"] = sorted(row["seed"] for row in members)
        for name, value in members[0].items():
            same = all(row.get(name) == value for row in members)
            if isinstance(value, str) and same and name not in entry:
                entry[name] = value
        for name in numeric:
            entry[name] = stat([row[name] for row in members if is_number(row.get(name))])
        out.append(entry)
    return out


@dataclass(frozen=True)
class Check:
    """One acceptance criterion in one cell: ``value`` compared with ``bound``."""

    scenario: str
    partition: str
    strategy: str
    criterion: str
    value: float | None
    bound: float
    passed: bool


def _mean(entry: dict[str, Any], key: str, field: str = "mean") -> float | None:
    value = entry.get(key)
    return getattr(value, field) if isinstance(value, Stat) and value.n else None


def _check(
    entry: dict, criterion: str, key: str, bound: float, at_most: bool, field: str = "mean"
) -> Check:
    value = _mean(entry, key, field)
    passed = value is not None and (value <= bound if at_most else value >= bound)
    return Check(
        entry["scenario"],
        entry["partition"],
        entry["strategy"],
        criterion,
        value,
        bound,
        passed,
    )


NATURAL_MODES = frozenset({"random", "client"})


def acceptance(entries: Iterable[dict[str, Any]], strategy: str) -> list[Check]:
    """The checks of a forgetting-quality sweep for ``strategy`` (means over seeds).

    - after recovery and at the end: test accuracy >= retrain - 0.5 pt;
    - backdoor success at the end <= retrain + 1 pt (cells that have one);
    - class deletions: accuracy on the forgotten classes' test data <= 1 %;
    - natural deletions (random samples, a leaving client): D_f accuracy at the end within
      2 pt of retrain's;
    - unlearning + recovery <= one FedAvg round of the same run;
    - the relay never lowers the test accuracy (the lowest change over seeds is >= 0).

    ``natural`` modes (their D_f is ordinary data) get the D_f check.
    """
    checks = []
    for entry in entries:
        if entry["strategy"] != strategy:
            continue
        for phase in ("after_recovery", "end"):
            key = f"{GAP_PREFIX}{phase}.test_accuracy"
            checks.append(_check(entry, f"{phase} test acc - retrain", key, -0.005, False))
        if _mean(entry, "end.backdoor_success") is not None:
            key = f"{GAP_PREFIX}end.backdoor_success"
            checks.append(_check(entry, "backdoor - retrain", key, 0.01, True))
        if _mean(entry, "end.forget_test_accuracy") is not None:
            key = "end.forget_test_accuracy"
            checks.append(_check(entry, "forgotten classes (test)", key, 0.01, True))
        if entry.get("mode") in NATURAL_MODES:
            for phase in ("after_recovery", "end"):
                key = f"{GAP_PREFIX}{phase}.forget_accuracy"
                abs_gap = _mean(entry, key)
                checks.append(
                    Check(
                        entry["scenario"],
                        entry["partition"],
                        strategy,
                        f"|{phase} D_f acc - retrain|",
                        None if abs_gap is None else abs(abs_gap),
                        0.02,
                        abs_gap is not None and abs(abs_gap) <= 0.02,
                    )
                )
        cost = "(unlearning + recovery) / round"
        checks.append(_check(entry, cost, "deletion_rounds", 1.0, True))
        checks.append(
            _check(entry, "relay change of test acc (min)", "relay_gain", 0.0, False, "low")
        )
    return checks


def markdown(entries: list[dict[str, Any]], columns: Sequence[tuple[str, str, float]]) -> str:
    """Mean ± std over seeds, one line per (scenario, partition, strategy).

    ``columns`` are ``(key, label, scale)``; scale 100 shows fractions as percentages. An MIA
    column shows its mean with the attack's mean power, or ``no power`` (see
    :func:`fedforget.report.formatting.format_mia`; its scale is not used).
    """
    head = "| scenario | partition | strategy | " + " | ".join(c[1] for c in columns) + " |"
    lines = [head, "|---|---|---|" + "---:|" * len(columns)]
    for entry in entries:
        cells = [_cell(entry, key, scale) for key, _, scale in columns]
        lines.append(
            f"| {entry['scenario']} | {entry['partition']} | {entry['strategy']} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines)


def _cell(entry: dict[str, Any], key: str, scale: float) -> str:
    value = entry.get(key)
    if not isinstance(value, Stat) or value.n == 0:
        return "-"
    if is_mia_key(key):
        power = entry.get(power_key(key))
        mean_power = power.mean if isinstance(power, Stat) and power.n else None
        return format_mia(value.mean, mean_power, value.std)
    return value.format(scale)


def checks_markdown(checks: Sequence[Check]) -> str:
    """The acceptance checks as a Markdown table (fractions shown in points)."""
    lines = [
        "| scenario | partition | strategy | criterion | value | bound | |",
        "|---|---|---|---|---:|---:|---|",
    ]
    for c in checks:
        percent = "round" not in c.criterion
        scale = 100 if percent else 1
        value = "-" if c.value is None else f"{c.value * scale:.2f}"
        lines.append(
            f"| {c.scenario} | {c.partition} | {c.strategy} | {c.criterion} | {value} | "
            f"{c.bound * scale:.2f} | {'pass' if c.passed else 'FAIL'} |"
        )
    return "\n".join(lines)
