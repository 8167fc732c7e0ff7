"""``fedforget compare --task gan``: GAN unlearning strategies branched from one federated GAN.

The federation trains its conditional GAN once, up to the deletion round; every strategy then
carries out the same deletion from that checkpoint, in the same Flower run (each branch named
in its messages, as in :mod:`fedforget.simulations.compare`). ``retrain`` runs first: paper
001's baseline, and the reference of the speed-up. Each row is paper 001's metrics of the GAN
right after the strategy's deletion step (:class:`fedforget.server.gan.GanEvaluator`).
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord
from flwr.serverapp import Grid
from rich.table import Table

from fedforget.config import ConfigError, SimulationConfig
from fedforget.data import build_federation
from fedforget.report import RunObserver
from fedforget.report.observer import CheckpointObserver
from fedforget.server.app import default_out_dir, gan_factory
from fedforget.server.gan import (
    GanEvaluator,
    GanSummary,
    gan_from_state,
    make_gan_strategy,
    plot_gan_samples,
)
from fedforget.simulations.runner import (
    check_gan_strategies,
    check_run,
    run_on_simulation_engine,
)
from fedforget.strategies.gan import RETRAIN, FederatedGan, gan_strategy_names
from fedforget.training import resolve_device

ORIGINAL = "original"
GAN_COLUMNS = [
    ("strategy", "strategy"),
    ("forgotten_recognition", "judge: forgotten %"),
    ("remaining_recognition", "judge: others %"),
    ("auc", "D AUC"),
    ("fd_forgotten", "FD forgotten"),
    ("fd_remaining", "FD others"),
    ("downstream_accuracy", "downstream %"),
    ("seconds", "seconds"),
    ("speedup_vs_retrain", "speed-up"),
]
PERCENT = {"forgotten_recognition", "remaining_recognition", "downstream_accuracy"}


@dataclass
class GanComparison:
    """The outcome of ``fedforget compare --task gan``."""

    rows: list[dict[str, Any]]
    out_dir: Path
    config: dict[str, Any]
    base_seconds: float
    details: dict[str, dict[str, Any]]

    def row(self, strategy: str) -> dict[str, Any]:
        """The row of one strategy (or of ``original``)."""
        return next(r for r in self.rows if r["strategy"] == strategy)


def gan_compare(
    config: SimulationConfig, strategies: list[str], display: RunObserver | None = None
) -> GanComparison:
    """Run the GAN comparison on Flower's simulation engine; write and return the results."""
    check_run(config)
    check_gan_strategies(config, strategies)
    return run_on_simulation_engine(
        config, lambda grid: run_gan_comparison(grid, config, strategies, display)
    )


def run_gan_comparison(
    grid: Grid,
    config: SimulationConfig,
    strategies: list[str],
    display: RunObserver | None = None,
) -> GanComparison:
    """Train the GAN to the deletion round once, then branch every strategy from there."""
    out_dir = default_out_dir(config.model_copy(update={"strategy": "gan-compare"}))
    out_dir.mkdir(parents=True, exist_ok=True)
    federation = build_federation(config)
    device = resolve_device(config.resources.server_device)
    names = [RETRAIN, *(s for s in strategies if s != RETRAIN)]
    branches = {
        name: make_gan_strategy(
            config, name, federation, CheckpointObserver(display, name), device, branch=name
        )
        for name in names
    }
    base = make_gan_strategy(config, RETRAIN, federation, CheckpointObserver(display), device)
    initial = ArrayRecord(gan_factory(config, federation)().state_dict())
    started = time.perf_counter()
    base.begin(initial, config.message_timeout)
    checkpoint = base.run_rounds(
        grid, initial, config.deletion.round, "federated", handle_deletions=False
    ).arrays
    base_seconds = time.perf_counter() - started
    if not base.pending_deletions:
        raise ConfigError("no client reported a deletion request by the deletion round")
    evaluator = GanEvaluator(config, federation, device)
    gans = {ORIGINAL: _gan(config, federation, checkpoint)}
    (out_dir / "models").mkdir(exist_ok=True)
    torch.save(gans[ORIGINAL].state_dict(), out_dir / "models" / f"{ORIGINAL}.pt")
    rows = [{"strategy": ORIGINAL, **_scores(evaluator, gans[ORIGINAL])}]
    details: dict[str, dict[str, Any]] = {}
    for name, strategy in branches.items():
        strategy.take_over(base)
        gans[name] = _gan(
            config, federation, strategy.carry_out_deletion(grid, config.deletion.round, checkpoint)
        )
        torch.save(gans[name].state_dict(), out_dir / "models" / f"{name}.pt")
        seconds = strategy.deletion.unlearning_seconds
        rows.append({"strategy": name, **_scores(evaluator, gans[name]), "seconds": seconds})
        details[name] = _details(strategy)
    _fill_speedups(rows)
    result = GanComparison(rows, out_dir, json.loads(config.to_json()), base_seconds, details)
    write_gan_comparison(result, evaluator.judge_name)
    plot_gan_samples(gans, out_dir / "samples.png")
    return result


def _gan(config: SimulationConfig, federation, arrays: ArrayRecord):
    return gan_from_state(config, federation, {k: v.numpy() for k, v in arrays.items()})


def _scores(evaluator: GanEvaluator, gan) -> dict[str, Any]:
    scores = evaluator.evaluate(gan).model_dump()
    scores["recognition"] = {str(k): v for k, v in scores["recognition"].items()}
    return scores


def _details(strategy: FederatedGan) -> dict[str, Any]:
    record = strategy.deletion
    return {
        "unlearning_seconds": record.unlearning_seconds,
        "forget_samples_received": record.forget_samples_received,
        "learning_samples": record.retain_samples,
        "report": strategy.unlearning_report,
    }


def _fill_speedups(rows: list[dict[str, Any]]) -> None:
    retrain = next(r for r in rows if r["strategy"] == RETRAIN)
    for row in rows[1:]:
        row["speedup_vs_retrain"] = retrain["seconds"] / row["seconds"] if row["seconds"] else None


def gan_cell(key: str, value: Any) -> str:
    """One table cell: percentages for rates, 3 decimals for AUC, 2 for the rest."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if key in PERCENT:
        return f"{100 * value:.1f}"
    if key == "auc":
        return f"{value:.3f}"
    if key == "speedup_vs_retrain":
        return f"{value:.1f}x"
    return f"{value:.2f}"


def parse_gan_strategies(text: str) -> list[str]:
    """``"cascaded,retrain"`` or ``"all"`` -> GAN-task strategy names (unknown: ConfigError)."""
    known = gan_strategy_names()
    names = known if text.strip() == "all" else [t.strip() for t in text.split(",")]
    names = [n for n in dict.fromkeys(names) if n]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ConfigError(
            f"unknown GAN strategy '{unknown[0] if unknown else text}'; choose from: "
            + ", ".join(known)
        )
    return names


def gan_table(rows: list[dict[str, Any]]) -> Table:
    """The comparison as a rich table."""
    table = Table(title="GAN unlearning (paper 001 metrics; FD is not Inception-FID)")
    for _, title in GAN_COLUMNS:
        table.add_column(title, justify="left" if title == "strategy" else "right")
    for row in rows:
        table.add_row(*(gan_cell(key, row.get(key)) for key, _ in GAN_COLUMNS))
    return table


def gan_phase_table(summary: GanSummary) -> Table:
    """A GAN-task run's phases as a rich table (``fedforget simulate --task gan``)."""
    rows = [{"strategy": name, **m.model_dump()} for name, m in summary.phases.items()]
    if summary.unlearning_seconds is not None and len(rows) > 1:
        rows[1]["seconds"] = summary.unlearning_seconds
    if summary.retrain_seconds is not None:
        rows[-1]["seconds"] = summary.retrain_seconds
    table = gan_table(rows)
    table.title = f"GAN task, strategy {summary.config['strategy']}: the GAN at each phase"
    return table


def gan_markdown_table(rows: list[dict[str, Any]]) -> str:
    """The comparison as a markdown table."""
    head = "| " + " | ".join(title for _, title in GAN_COLUMNS) + " |"
    rule = "|" + "---|" * len(GAN_COLUMNS)
    body = [
        "| " + " | ".join(gan_cell(key, row.get(key)) for key, _ in GAN_COLUMNS) + " |"
        for row in rows
    ]
    return "\n".join([head, rule, *body])


def write_gan_comparison(result: GanComparison, judge: str) -> None:
    """``gan_compare.csv``, ``gan_compare.json`` and ``gan_compare.md``."""
    out = result.out_dir
    keys = [key for key, _ in GAN_COLUMNS]
    with (out / "gan_compare.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        for row in result.rows:
            writer.writerow({k: "" if row.get(k) is None else row[k] for k in keys})
    payload = {
        "rows": result.rows,
        "details": result.details,
        "base_seconds": result.base_seconds,
        "judge": judge,
        "config": result.config,
    }
    (out / "gan_compare.json").write_text(json.dumps(payload, indent=2) + "\n")
    note = (
        f"\n\nJudge and feature extractor: {judge}. FD is a Frechet distance in that "
        "classifier's penultimate features, not Inception-FID.\n"
    )
    (out / "gan_compare.md").write_text(gan_markdown_table(result.rows) + note)
