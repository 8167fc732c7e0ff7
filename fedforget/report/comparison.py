"""Columns and formatting of ``fedforget compare``'s tables (CSV, Markdown, terminal).

Every column is a :class:`Column` with its header and its meaning, so each table can explain
what it shows (``compare.md`` lists every header it uses, the terminal a legend).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fedforget.config import ConfigError
from fedforget.metrics import (
    RELEARN_ALPHA,
    RELEARN_BATCH,
    RELEARN_LR,
    RELEARN_MAX_STEPS,
    RELEARN_SAMPLES,
)
from fedforget.report.formatting import MIA_MIN_POWER, format_mia, is_mia_key, power_key

ORIGINAL = "original"
COST_COLUMNS = (
    "bytes_to_clients",
    "bytes_from_clients",
    "history_bytes",
    "client_seconds",
    "training_client_seconds",
    "server_seconds",
    "seconds",
    "speedup_vs_retrain",
)
"""The deletion step's cost (see :func:`fedforget.simulations.branching.cost`)."""
BYTE_COLUMNS = frozenset(COST_COLUMNS[:3])
PHASE_METRICS = (
    "test_accuracy",
    "forget_accuracy",
    "retain_accuracy",
    "forget_test_accuracy",
    "retain_test_accuracy",
    "backdoor_success",
    "mia_success",
    "mia_power",
)
"""The metrics of :class:`fedforget.metrics.PhaseMetrics`: every row has them, and the later
phases ``compare --after-rounds`` scores repeat them (``<phase>.<metric>`` row keys)."""
METRIC_COLUMNS = (
    *PHASE_METRICS,
    "jsd",
    "l2",
    "attention_discrepancy",
    "us",
    "fr",
    "mrr",
    "similarity",
    "relearn_steps",
    "ain",
    *COST_COLUMNS,
)
CSV_COLUMNS = ("strategy", *METRIC_COLUMNS)
AIN_FOOTNOTE = (
    f"AIN (paper 002 Eq. 10): SGD steps (lr {RELEARN_LR}, batch {RELEARN_BATCH}, cap "
    f"{RELEARN_MAX_STEPS}) of fine-tuning on a seeded subset of at most {RELEARN_SAMPLES} D_f "
    f"samples until the model recognises {100 * RELEARN_ALPHA:.0f} % as many of them as the "
    "original model did, over the retrained model's steps (1 is ideal)."
)

PERCENT_COLUMNS = frozenset(PHASE_METRICS[:6])


@dataclass(frozen=True)
class Column:
    """A column of the comparison's tables: the row key, its header and what it means."""

    key: str
    label: str
    meaning: str
    short: str = ""
    """A few words for one-line legends (the live display's), where there is one."""


STRATEGY_MEANING = (
    "the unlearning method; `original` is the model at the deletion round, before any deletion"
)
TABLE_COLUMNS = (
    Column("test_accuracy", "test", "accuracy on the clean test set (%)", "test-set accuracy"),
    Column(
        "retain_accuracy",
        "D_r",
        "accuracy on D_r, the retained training samples (a seeded subsample of at most 10,000) (%)",
        "accuracy on the retained training samples",
    ),
    Column(
        "forget_accuracy",
        "D_f",
        "accuracy on D_f, the deleted training samples, with the labels the clients held "
        "(backdoor deletion: the trigger's target label, so the attack's success on them) (%)",
        "accuracy on the deleted training samples",
    ),
    Column(
        "retain_test_accuracy",
        "D_tr",
        "accuracy on the test samples of the retained classes (class deletion; otherwise the "
        "whole test set) (%)",
        "accuracy on test samples of the retained classes",
    ),
    Column(
        "forget_test_accuracy",
        "D_tf",
        "accuracy on the test samples of the forgotten classes (class deletion) (%)",
        "accuracy on test samples of the forgotten classes",
    ),
    Column(
        "backdoor_success",
        "backdoor",
        "triggered test samples whose true label is not the target, classified as the target (%)",
        "the trigger's success on test samples",
    ),
    Column(
        "mia_success",
        "MIA",
        "share of D_f a membership-inference attack calls members, with the attack's power "
        "(its balanced accuracy on members vs non-members, 0.5 = chance); `no power (p)` "
        f"when the power is below {MIA_MIN_POWER}: the share is then noise",
        "share of D_f a membership attack calls members (power 0.5 = chance)",
    ),
    Column(
        "jsd", "JSD", "Jensen-Shannon divergence of the test-set outputs to retrain's (0 = same)"
    ),
    Column("l2", "L2", "L2 distance of all weights to the retrained model"),
    Column(
        "attention_discrepancy",
        "att.",
        "attention-map discrepancy to the retrained model (paper 000 Table III; 0 = same)",
    ),
    Column(
        "us",
        "US",
        "unlearning score (paper 004 Eq. 8): 1 = retained data all right, forgotten all wrong",
    ),
    Column(
        "fr",
        "FR",
        "forgetting rate (paper 003 Eq. 15): the relative drop of D_f accuracy from `original`",
    ),
    Column(
        "mrr",
        "MRR",
        "memory retention rate (paper 003 Eq. 16): D_r accuracy over `original`'s",
    ),
    Column(
        "similarity",
        "sim.",
        "1 - JS divergence (bits) of the outputs on D_f to retrain's (1 = same)",
    ),
    Column(
        "ain",
        "AIN",
        "anamnesis index (paper 002 Eq. 10): steps to relearn D_f over retrain's (1 is ideal)",
    ),
    Column("bytes_to_clients", "MB down", "MB the deletion step's messages carried to the clients"),
    Column("bytes_from_clients", "MB up", "MB of the clients' replies during the deletion step"),
    Column("history_bytes", "MB hist.", "MB of stored client updates handed to the method"),
    Column(
        "client_seconds",
        "client s",
        "compute seconds the clients reported for the deletion step, summed over clients",
    ),
    Column(
        "training_client_seconds",
        "train. client s",
        "client compute seconds the method adds to training before any deletion (MuGAN, "
        "QuickDrop, FedAU), summed over clients",
    ),
    Column(
        "server_seconds",
        "server s",
        "the deletion step's wall seconds less the time it waited for the clients",
    ),
    Column("seconds", "s", "the deletion step's wall seconds"),
    Column("speedup_vs_retrain", "speedup", "retrain's seconds over the row's"),
)
"""Every column a comparison table can show, in order."""

DEFAULT_COLUMNS = (
    "test_accuracy",
    "retain_accuracy",
    "forget_accuracy",
    "forget_test_accuracy",
    "backdoor_success",
    "mia_success",
    "jsd",
    "seconds",
    "speedup_vs_retrain",
)
"""The terminal's columns unless told otherwise (those without a value are left out)."""


def parse_columns(text: str | None) -> tuple[str, ...] | None:
    """``--columns``: ``default``, ``all`` or a comma list of headers or keys -> row keys.

    ``None`` stands for every column (``all``). Unknown names are a ConfigError that lists
    the choices.
    """
    if text is None or text.strip() in ("", "default"):
        return DEFAULT_COLUMNS
    if text.strip() == "all":
        return None
    by_name = {name.lower(): c.key for c in TABLE_COLUMNS for name in (c.key, c.label)}
    keys, unknown = [], []
    for name in (t.strip() for t in text.split(",")):
        if name:
            (keys if name.lower() in by_name else unknown).append(by_name.get(name.lower(), name))
    if unknown or not keys:
        choices = ", ".join(c.label for c in TABLE_COLUMNS)
        raise ConfigError(
            f"unknown column(s) {', '.join(unknown) or '(none)'} for --columns; choose "
            f"default, all or some of: {choices}"
        )
    return tuple(dict.fromkeys(keys))


def format_cell(key: str, row: dict[str, Any]) -> str:
    """``row``'s ``key`` as shown: percentages for accuracies and attack rates, an MIA figure
    with its power (:func:`fedforget.report.formatting.format_mia`), short decimals else."""
    value = row.get(key)
    if is_mia_key(key):
        return format_mia(value, row.get(power_key(key)))
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if key.rpartition(".")[2] in PERCENT_COLUMNS:
        return f"{100 * value:.2f}"
    if key == "relearn_steps":
        return f"{value:.0f}"
    if key in BYTE_COLUMNS:
        return f"{value / 1e6:.2f}"
    if key in ("seconds", "client_seconds", "training_client_seconds", "server_seconds"):
        return f"{value:.1f}"
    if key in ("l2", "speedup_vs_retrain"):
        return f"{value:.2f}"
    return f"{value:.4f}" if key == "jsd" else f"{value:.3f}"


def visible_columns(rows: list[dict[str, Any]], keys: Sequence[str] | None = None) -> list[Column]:
    """The columns (of ``keys``, in the table's order; every column for ``None``) that have a
    value in at least one row."""
    wanted = TABLE_COLUMNS if keys is None else [c for c in TABLE_COLUMNS if c.key in keys]
    return [c for c in wanted if any(r.get(c.key) is not None for r in rows)]


def legend(columns: Sequence[Column]) -> list[str]:
    """What each of ``columns`` means, one ``header: meaning`` line each (plain text)."""
    return [f"{c.label}: {c.meaning.replace('`', '')}" for c in columns]


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The comparison as a Markdown table (accuracies and attack rates in %), every column
    explained below it."""
    columns = visible_columns(rows)
    lines = [
        "| strategy | " + " | ".join(c.label for c in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for row in rows:
        cells = [format_cell(c.key, row) for c in columns]
        lines.append(f"| {row['strategy']} | " + " | ".join(cells) + " |")
    lines += ["", "Columns:", "", f"- `strategy`: {STRATEGY_MEANING}."]
    lines += [f"- `{c.label}`: {c.meaning}." for c in columns]
    if any(c.key == "ain" for c in columns):
        lines += ["", AIN_FOOTNOTE]
    return "\n".join(lines)


PHASES = ("after_unlearning", "end")
"""The later phases ``compare --after-rounds`` scores (``<phase>.<metric>`` row keys)."""


def phase_columns(rows: list[dict[str, Any]]) -> list[str]:
    """The ``<phase>.<metric>`` columns that have a value in at least one row."""
    keys = [f"{phase}.{metric}" for phase in PHASES for metric in PHASE_METRICS]
    return [key for key in keys if any(row.get(key) is not None for row in rows)]


def durability_table(rows: list[dict[str, Any]]) -> str:
    """Each metric right after the deletion step and after the later FedAvg rounds (in %).

    Empty when the comparison ran no later rounds. A method whose D_f (or backdoor) column
    climbs back between the two is reverting: its forgetting does not last. The headers are
    the main table's, with ``step`` or ``end`` after them.
    """
    shown = [c for c in TABLE_COLUMNS if c.key in PHASE_METRICS]
    columns = [c for c in shown if any(r.get(f"end.{c.key}") is not None for r in rows)]
    if not columns:
        return ""
    header = [f"{c.label} {when}" for c in columns for when in ("step", "end")]
    lines = ["| strategy | " + " | ".join(header) + " |", "|---|" + "---:|" * len(header)]
    for row in rows:
        if row["strategy"] == ORIGINAL:
            continue
        cells = [format_cell(key, row) for c in columns for key in (c.key, f"end.{c.key}")]
        lines.append(f"| {row['strategy']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
