"""The run plot: accuracy, attack success and MIA over rounds, deletion and recovery marked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from fedforget.report.summary import Summary

SERIES = (
    ("test_accuracy", "clean test accuracy", "tab:blue"),
    ("forget_accuracy", "accuracy on D_f", "tab:orange"),
    ("backdoor_success", "backdoor success", "tab:red"),
    ("forget_test_accuracy", "accuracy on forgotten classes (test)", "tab:purple"),
    ("mia_success", "MIA success on D_f", "tab:green"),
)
UNLEARNED_OFFSET = 0.33
RECOVERED_OFFSET = 0.66
FINAL_OFFSET = 0.9
NODE_FORGET_LABEL = "accuracy on D_f, measured by the deleting nodes"


def _series(rows: list[dict[str, Any]], phase: str, key: str) -> tuple[list[float], list[float]]:
    points = [
        (r["round"], r[key]) for r in rows if r.get("phase") == phase and r.get(key) is not None
    ]
    return [p[0] for p in points], [p[1] for p in points]


def _checkpoint_points(
    rows: list[dict[str, Any]], key: str, deletion_round: int
) -> tuple[list, list]:
    offsets = {"after_unlearning": UNLEARNED_OFFSET, "after_recovery": RECOVERED_OFFSET}
    xs, ys = [], []
    for row in rows:
        name = row.get("checkpoint")
        if name in offsets and row.get(key) is not None:
            xs.append(deletion_round + offsets[name])
            ys.append(row[key])
    return xs, ys


def _node_forget_points(rows: list[dict[str, Any]], summary: Summary) -> list[tuple[float, float]]:
    """The deleting nodes' own D_f accuracy per phase, placed like the server's checkpoints.

    ``final`` sits at the last FedAvg round, or just after the relay when the deletion was in
    the last round.
    """
    deletion_round = summary.deletion.round
    measured = summary.deletion.node_forget_accuracy
    if not deletion_round or not measured:
        return []
    last = max((r["round"] for r in rows if r.get("phase") == "federated"), default=0)
    places = {
        "before_deletion": float(deletion_round),
        "after_unlearning": deletion_round + UNLEARNED_OFFSET,
        "after_recovery": deletion_round + RECOVERED_OFFSET,
        "final": float(last) if last > deletion_round else deletion_round + FINAL_OFFSET,
    }
    return sorted((places[phase], value) for phase, value in measured.items() if phase in places)


def plot_run(rows: list[dict[str, Any]], summary: Summary, path: Path) -> Path:
    """Draw the metrics of every round (solid) and of the retrain reference (dashed)."""
    fig, ax = plt.subplots(figsize=(9, 5), dpi=120)
    deletion_round = summary.deletion.round
    for key, label, color in SERIES:
        xs, ys = _series(rows, "federated", key)
        if not xs:
            continue
        if deletion_round:
            cx, cy = _checkpoint_points(rows, key, deletion_round)
            merged = sorted(zip(xs + cx, ys + cy, strict=True))
            xs, ys = [m[0] for m in merged], [m[1] for m in merged]
        ax.plot(xs, ys, marker="o", markersize=3, color=color, label=label)
        rx, ry = _series(rows, "reference", key)
        if rx:
            ax.plot(rx, ry, linestyle="--", color=color, alpha=0.6, label=f"{label} (retrain)")
    node_points = _node_forget_points(rows, summary)
    if node_points:  # a deployment's server holds no D_f: the deleting nodes measured it
        ax.plot(
            [x for x, _ in node_points],
            [y for _, y in node_points],
            marker="s",
            markersize=4,
            linestyle="-.",
            color="tab:brown",
            label=NODE_FORGET_LABEL,
        )
    if deletion_round:
        ax.axvline(deletion_round + 0.05, color="black", linestyle=":", label="deletion request")
        ax.axvspan(
            deletion_round + UNLEARNED_OFFSET,
            deletion_round + RECOVERED_OFFSET,
            color="grey",
            alpha=0.2,
            label="recovery relay",
        )
    ax.set_xlabel("FedAvg round")
    ax.set_ylabel("fraction")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"fedforget: {summary.strategy}, {summary.deletion.mode} deletion")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


COMPARISON_PANELS = (
    (("test_accuracy", "retain_test_accuracy"), "accuracy kept (%)"),
    (
        ("forget_accuracy", "forget_test_accuracy", "backdoor_success", "mia_success"),
        "forgetting (%)",
    ),
    (("seconds",), "wall time (s)"),
)


def plot_comparison(rows: list[dict[str, Any]], path: Path) -> None:
    """Grouped bars per strategy: what it keeps, what it forgets, what it costs."""
    names = [r["strategy"] for r in rows]
    fig, axes = plt.subplots(1, len(COMPARISON_PANELS), figsize=(6 * len(COMPARISON_PANELS), 4.5))
    for axis, (keys, title) in zip(axes, COMPARISON_PANELS, strict=True):
        keys = [k for k in keys if any(r.get(k) is not None for r in rows)]
        width = 0.8 / max(len(keys), 1)
        for i, key in enumerate(keys):
            scale = 1.0 if key == "seconds" else 100.0
            values = [scale * (r.get(key) or 0.0) for r in rows]
            positions = [j + (i - (len(keys) - 1) / 2) * width for j in range(len(names))]
            axis.bar(positions, values, width, label=key.replace("_", " "))
        axis.set_xticks(range(len(names)), names, rotation=45, ha="right")
        axis.set_title(title)
        if len(keys) > 1:
            axis.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


SWEEP_PANELS = (
    ("gap.end.test_accuracy", "test accuracy at the end - retrain (pt)"),
    ("gap.end.forgetting", "forgetting at the end - retrain (pt)"),
)
FORGETTING_KEYS = (
    "end.backdoor_success",
    "end.forget_test_accuracy",
    "end.forget_accuracy",
)


def _forgetting_gap(entry: dict[str, Any]) -> Any:
    """The scenario's own forgetting measure, as a gap to retrain (a ``Stat`` or ``None``)."""
    for key in FORGETTING_KEYS:
        if entry.get(key) is not None:
            return entry.get(f"gap.{key}")
    return None


def plot_sweep(entries: list[dict[str, Any]], path: Path) -> None:
    """Bars per cell (scenario / partition), one per strategy, mean ± std over seeds."""
    cells = list(dict.fromkeys((e["scenario"], e["partition"]) for e in entries))
    strategies = list(dict.fromkeys(e["strategy"] for e in entries))
    by_key = {(e["scenario"], e["partition"], e["strategy"]): e for e in entries}
    fig, axes = plt.subplots(1, len(SWEEP_PANELS), figsize=(7 * len(SWEEP_PANELS), 4.5))
    width = 0.8 / max(len(strategies), 1)
    for axis, (key, title) in zip(axes, SWEEP_PANELS, strict=True):
        for i, strategy in enumerate(strategies):
            means, errors = [], []
            for cell in cells:
                entry = by_key.get((*cell, strategy), {})
                value = _forgetting_gap(entry) if key == "gap.end.forgetting" else entry.get(key)
                has = value is not None and getattr(value, "n", 0)
                means.append(100 * value.mean if has else 0.0)
                errors.append(100 * value.std if has else 0.0)
            positions = [j + (i - (len(strategies) - 1) / 2) * width for j in range(len(cells))]
            axis.bar(positions, means, width, yerr=errors, capsize=2, label=strategy)
        axis.axhline(0.0, color="black", linewidth=0.8)
        labels = [f"{s}\n{p}" for s, p in cells]
        axis.set_xticks(range(len(cells)), labels, rotation=45, ha="right", fontsize=7)
        axis.set_title(title)
        axis.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
