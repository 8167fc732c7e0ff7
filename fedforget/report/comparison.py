"""Columns and formatting of ``fedforget compare``'s table (CSV, Markdown, terminal)."""

from __future__ import annotations

import math
from typing import Any

from fedforget.metrics import (
    RELEARN_ALPHA,
    RELEARN_BATCH,
    RELEARN_LR,
    RELEARN_MAX_STEPS,
    RELEARN_SAMPLES,
)

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
METRIC_COLUMNS = (
    "test_accuracy",
    "forget_accuracy",
    "retain_accuracy",
    "forget_test_accuracy",
    "retain_test_accuracy",
    "backdoor_success",
    "mia_success",
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

PERCENT_COLUMNS = frozenset(METRIC_COLUMNS[:7])
TABLE_COLUMNS = (
    ("test_accuracy", "test"),
    ("retain_accuracy", "D_r"),
    ("forget_accuracy", "D_f"),
    ("retain_test_accuracy", "D_tr"),
    ("forget_test_accuracy", "D_tf"),
    ("backdoor_success", "backdoor"),
    ("mia_success", "MIA"),
    ("jsd", "JSD"),
    ("l2", "L2"),
    ("attention_discrepancy", "att."),
    ("us", "US"),
    ("fr", "FR"),
    ("mrr", "MRR"),
    ("similarity", "sim."),
    ("ain", "AIN"),
    ("bytes_to_clients", "MB down"),
    ("bytes_from_clients", "MB up"),
    ("history_bytes", "MB hist."),
    ("client_seconds", "client s"),
    ("training_client_seconds", "train. client s"),
    ("server_seconds", "server s"),
    ("seconds", "s"),
    ("speedup_vs_retrain", "speedup"),
)


def format_cell(key: str, value: Any) -> str:
    """Percentages for accuracies and attack rates, short decimals for the rest."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if key in PERCENT_COLUMNS:
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


def visible_columns(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The table's columns that have a value in at least one row."""
    return [(k, label) for k, label in TABLE_COLUMNS if any(r.get(k) is not None for r in rows)]


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The comparison as a Markdown table (accuracies and attack rates in %)."""
    columns = visible_columns(rows)
    lines = [
        "| strategy | " + " | ".join(label for _, label in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for row in rows:
        cells = [format_cell(key, row.get(key)) for key, _ in columns]
        lines.append(f"| {row['strategy']} | " + " | ".join(cells) + " |")
    if any(key == "ain" for key, _ in columns):
        lines += ["", AIN_FOOTNOTE]
    return "\n".join(lines)


PHASES = ("after_unlearning", "end")
"""The later phases ``compare --after-rounds`` scores (``<phase>.<metric>`` row keys)."""
PHASE_METRICS = METRIC_COLUMNS[:7]


def phase_columns(rows: list[dict[str, Any]]) -> list[str]:
    """The ``<phase>.<metric>`` columns that have a value in at least one row."""
    keys = [f"{phase}.{metric}" for phase in PHASES for metric in PHASE_METRICS]
    return [key for key in keys if any(row.get(key) is not None for row in rows)]


def durability_table(rows: list[dict[str, Any]]) -> str:
    """Each metric right after the deletion step and after the later FedAvg rounds (in %).

    Empty when the comparison ran no later rounds. A method whose D_f (or backdoor) column
    climbs back between the two is reverting: its forgetting does not last.
    """
    labels = dict(TABLE_COLUMNS)
    metrics = [m for m in PHASE_METRICS if any(r.get(f"end.{m}") is not None for r in rows)]
    if not metrics:
        return ""
    header = [f"{labels[m]} {when}" for m in metrics for when in ("step", "end")]
    lines = ["| strategy | " + " | ".join(header) + " |", "|---|" + "---:|" * len(header)]
    for row in rows:
        if row["strategy"] == ORIGINAL:
            continue
        cells = [format_cell(m, row.get(key)) for m in metrics for key in (m, f"end.{m}")]
        lines.append(f"| {row['strategy']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
