"""Tables of ``fedforget sweep``: per-cell rows, mean +- std over seeds, the retrain band.

A sweep row is one strategy in one cell (scenario x partition x seed): flat, numeric metrics
keyed ``<phase>.<metric>`` (``after_unlearning.test_accuracy``, ``end.backdoor_success``) plus
costs (``unlearning_seconds``, ``round_seconds``, ...). Everything here is plain Python on
those rows, so the same code summarises a sweep that ran or one read back from ``sweep.csv``.

The reference of a cell is a *band*: its retrains (``retrain`` rows, one per reference seed:
the same data, other initial weights and batch orders). Every row gets, per metric, its gap
to the band's mean (``gap.<key>``) and the band's tolerance ``max(0.5 pt, 2 std)``
(``tol.<key>``); a check holds when the mean gap over seeds lies within the mean tolerance.
The acceptance of a sweep counts only the cells where ``none`` (the model as it was) fails a
check by a clear margin (:func:`discriminating`) and whose models are fit for comparison
(``cell_status`` ``ok``: the federation learned and converged, no reference diverged).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from fedforget.data.modes import Kind, deletion_mode
from fedforget.report.formatting import MIA_MIN_POWER, format_mia, is_mia_key, power_key

RETRAIN = "retrain"
NONE = "none"
CELL_KEYS = ("scenario", "partition", "seed")
GROUP_KEYS = ("scenario", "partition", "strategy")
GAP_PREFIX = "gap."
TOL_PREFIX = "tol."
MIN_TOLERANCE = 0.005
"""A check's least tolerance (0.5 pt): below it the band's noise is not measured."""
BAND_STDS = 2.0
"""A check holds within this many band standard deviations of the band's mean."""
CLEAR_MARGIN = 0.01
"""``none`` fails a check clearly when it lies at least 1 pt beyond the check's bound."""
OK = "ok"


def is_number(value: Any) -> bool:
    """True for finite ints and floats (not bools, not None, not NaN)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return not math.isnan(value)


def add_band(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row with its gap to its cell's retrain band and the band's tolerance, per metric.

    ``gap.<key>`` is the row's value minus the mean of the cell's ``retrain`` rows;
    ``tol.<key>`` is ``max(MIN_TOLERANCE, BAND_STDS x`` their sample std ``)`` (a band of
    one retrain has std 0: the least tolerance). Rows of a cell without a retrain get none.
    """
    bands: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        if row["strategy"] == RETRAIN:
            bands.setdefault(tuple(row[k] for k in CELL_KEYS), []).append(row)
    out = []
    for row in rows:
        band = bands.get(tuple(row[k] for k in CELL_KEYS), [])
        extra: dict[str, float] = {}
        for key, value in row.items():
            if key in CELL_KEYS or key.startswith((GAP_PREFIX, TOL_PREFIX)) or not is_number(value):
                continue
            members = [m[key] for m in band if is_number(m.get(key))]
            if members:
                spread = stat(members)
                extra[GAP_PREFIX + key] = value - spread.mean
                extra[TOL_PREFIX + key] = max(MIN_TOLERANCE, BAND_STDS * spread.std)
        out.append({**row, **extra})
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
    """One acceptance criterion in one cell: ``value`` (a mean over seeds) against ``bound``.

    ``excess`` is how far ``value`` lies beyond the bound (0 when the check holds): the
    clearness with which ``none`` fails it.
    """

    scenario: str
    partition: str
    strategy: str
    criterion: str
    value: float | None
    bound: float
    passed: bool
    excess: float = 0.0


def _mean(entry: dict[str, Any], key: str, field: str = "mean") -> float | None:
    value = entry.get(key)
    return getattr(value, field) if isinstance(value, Stat) and value.n else None


def _check(
    entry: dict, criterion: str, key: str, bound: float, at_most: bool, field: str = "mean"
) -> Check:
    value = _mean(entry, key, field)
    excess = 0.0 if value is None else (value - bound if at_most else bound - value)
    passed = value is not None and excess <= 0
    return Check(
        entry["scenario"],
        entry["partition"],
        entry["strategy"],
        criterion,
        value,
        bound,
        passed,
        max(0.0, excess),
    )


def _band_check(entry: dict, phase_key: str, label: str, sides: str) -> Check | None:
    """``gap.<key>`` against the band's tolerance: ``sides`` is ``at least`` (the value may
    not fall below the band), ``at most`` (nor rise above it) or ``within`` (both)."""
    gap = _mean(entry, GAP_PREFIX + phase_key)
    tolerance = _mean(entry, TOL_PREFIX + phase_key)
    if gap is None or tolerance is None:
        return None
    if sides == "within":
        value, excess, criterion = abs(gap), abs(gap) - tolerance, f"|{label} - retrain|"
    elif sides == "at most":
        value, excess, criterion = gap, gap - tolerance, f"{label} - retrain"
    else:
        value, excess, criterion = -gap, -gap - tolerance, f"retrain - {label}"
    return Check(
        entry["scenario"],
        entry["partition"],
        entry["strategy"],
        criterion,
        value,
        tolerance,
        excess <= 0,
        max(0.0, excess),
    )


PHASES = (("after_recovery", "after_recovery."), ("end", "end."))
"""The row's phases a check reads: right after the deletion step (against the band at the
same round) and after the following FedAvg rounds (against the band at its end)."""


def _forgetting_checks(entry: dict[str, Any]) -> list[tuple[str, str, str]]:
    """``(metric, label, sides)`` of the forgetting checks the cell's mode calls for."""
    mode = deletion_mode(entry["mode"]) if entry.get("mode") else None
    checks: list[tuple[str, str, str]] = []
    if _mean(entry, "end.backdoor_success") is not None:
        checks.append(("backdoor_success", "backdoor", "at most"))
    if _mean(entry, "end.forget_test_accuracy") is not None:  # D_tf: classes or a style
        sides = "at most" if mode is not None and mode.names_classes else "within"
        checks.append(("forget_test_accuracy", "D_tf acc", sides))
    if mode is None or mode.kind in (Kind.RANDOM, Kind.CLIENT):  # D_f is what is forgotten
        checks.append(("forget_accuracy", "D_f acc", "within"))
    power = _mean(entry, "after_recovery.mia_power")
    if power is not None and power >= MIA_MIN_POWER:
        checks.append(("mia_success", "MIA", "within"))
    return checks


def acceptance(entries: Iterable[dict[str, Any]], strategy: str) -> list[Check]:
    """The checks of a forgetting-quality sweep for ``strategy`` (means over seeds).

    Against the retrain band (:func:`add_band`), right after the deletion step and at the
    end: test accuracy not below the band; a backdoor's success and a deleted class's test
    accuracy not above it; a style's test accuracy (D_tf), D_f's accuracy (samples or a
    client deleted) and, where the attack has power, the MIA within it. Besides: unlearning +
    recovery <= one FedAvg round of the same run, and the relay never lowers the test
    accuracy (the lowest change over seeds is >= 0).
    """
    checks = []
    for entry in entries:
        if entry["strategy"] != strategy:
            continue
        for phase, prefix in PHASES:
            found = _band_check(entry, f"{prefix}test_accuracy", f"{phase} test acc", "at least")
            checks += [found] if found is not None else []
            for metric, label, sides in _forgetting_checks(entry):
                found = _band_check(entry, f"{prefix}{metric}", f"{phase} {label}", sides)
                checks += [found] if found is not None else []
        cost = "(unlearning + recovery) / round"
        checks.append(_check(entry, cost, "deletion_rounds", 1.0, True))
        if strategy != NONE:
            checks.append(
                _check(entry, "relay change of test acc (min)", "relay_gain", 0.0, False, "low")
            )
    return checks


def discriminating(entries: Iterable[dict[str, Any]]) -> dict[tuple[str, str], Check | None]:
    """Per (scenario, partition): the check ``none`` fails by the clearest margin (at least
    :data:`CLEAR_MARGIN`), or ``None`` when the cell cannot tell forgetting from nothing."""
    found: dict[tuple[str, str], Check | None] = {}
    for check in acceptance(entries, NONE):
        key = (check.scenario, check.partition)
        found.setdefault(key, None)
        clear = not check.passed and check.excess >= CLEAR_MARGIN and "round" not in check.criterion
        best = found[key]
        if clear and (best is None or check.excess > best.excess):
            found[key] = check
    return found


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


def unfit_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The cells (scenario, partition, seed) whose ``cell_status`` is not ``ok``, and why."""
    unfit = sorted(
        {(r["scenario"], r["partition"], r["seed"], r["cell_status"]) for r in rows}
        - {(r["scenario"], r["partition"], r["seed"], OK) for r in rows}
    )
    if not unfit:
        return "None: every cell's federation learned and converged, no reference diverged."
    lines = ["| scenario | partition | seed | why |", "|---|---|---:|---|"]
    lines += [f"| {s} | {p} | {seed} | {why} |" for s, p, seed, why in unfit]
    return "\n".join(lines)


def discrimination_markdown(found: dict[tuple[str, str], Check | None]) -> str:
    """Which check ``none`` fails in each cell, and by how much (points beyond its bound)."""
    lines = ["| scenario | partition | none fails | by |", "|---|---|---|---:|"]
    for (scenario, partition), check in sorted(found.items()):
        failing = check.criterion if check is not None else "nothing clearly: not counted"
        by = f"{check.excess * 100:.2f} pt" if check is not None else "-"
        lines.append(f"| {scenario} | {partition} | {failing} | {by} |")
    return "\n".join(lines)
