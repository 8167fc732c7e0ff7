"""``fedforget sweep``: a matrix of deletion scenarios x partitions x seeds, each against retrain.

Every cell is one ``compare`` (:mod:`fedforget.simulations.branching`) in its own Flower
simulation: the federation trains once to the deletion round, then ``retrain`` and every
chosen strategy carry out the same deletion from that checkpoint and continue FedAvg to the
last round. A cell therefore yields, per strategy, the metrics after the unlearning alone,
after the recovery relay and at the end, the costs, and the gaps to the retrain of the same
seed. The tables give mean ± std over seeds (:mod:`fedforget.report.sweep`).
"""

from __future__ import annotations

import csv
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedforget.config import ConfigError, SimulationConfig, merge_sections, validate_config
from fedforget.data import resolve_training
from fedforget.metrics import PhaseMetrics
from fedforget.report.sweep import (
    CLEAR_MARGIN,
    NONE,
    OK,
    RETRAIN,
    acceptance,
    add_band,
    aggregate,
    checks_markdown,
    discriminating,
    discrimination_markdown,
    is_number,
    markdown,
    unfit_markdown,
)
from fedforget.simulations.branching import (
    ORIGINAL,
    Comparison,
    branch_names,
    check_single_deletion,
    is_reference,
)

SCENARIOS: dict[str, dict[str, Any]] = {
    "backdoor-6%": {"deletion": {"mode": "backdoor", "share": 0.06}},
    "random-4%": {"deletion": {"mode": "random", "share": 0.04, "deleting_clients": [0, 1, 2]}},
    "class-3": {"deletion": {"mode": "class", "forget_classes": [3]}},
    "client-5": {"deletion": {"mode": "client", "deleting_clients": [5]}},
    # A client whose images carry a style of their own (negatives) leaves: the original reads
    # the style, a model retrained without it does not (fedforget.data.modes.StyleMode).
    "style-client": {"deletion": {"mode": "style", "deleting_clients": [5]}},
    # Annotation errors: 60 of clients 0-2's samples carry a wrong label, which the original
    # memorises and a retrained model does not (fedforget.data.modes.MislabeledMode). In the
    # overfitting federation of overfit-20: at 20 clients of 3,000 MNIST samples and 2 local
    # epochs the original had learnt 0.19 % of 3,600 wrong labels (a retrain 0.17 %): FedAvg
    # outvoted them, so the cell could not tell forgetting from doing nothing.
    "mislabeled": {
        "deletion": {
            "mode": "mislabeled",
            "count": 60,
            "deleting_clients": [0, 1, 2],
            "round": 20,
        },
        "data": {"train_samples": 2000},
        "train": {"rounds": 21, "local_epochs": 20, "batch_size": 20, "lr": 0.02},
    },
    # An overfitting federation: 20 clients of 100 MNIST samples, 20 local epochs; 30 % of the
    # samples of clients 0-4 deleted. The original knows D_f as members, not as unseen data.
    "overfit-20": {
        "mia": "loss",
        "deletion": {
            "mode": "random",
            "count": 150,
            "deleting_clients": [0, 1, 2, 3, 4],
            "round": 20,
        },
        "data": {"train_samples": 2000},
        "train": {"rounds": 21, "local_epochs": 20, "batch_size": 20, "lr": 0.02},
    },
    # Few clients with few samples each and many local epochs: a federation that memorises,
    # where membership attacks have power (docs/methods-quality.md, section 3): 2 clients of
    # 50 MNIST samples (100 each left the attack's power at 0.57-0.64 per seed, too near
    # 0.60), 20 local epochs at lr 0.02 (0.05 diverged on one seed of 3), 30 % of every
    # client's samples deleted after round 20 (a D_f of 30 samples), one round after.
    # It scores the MIA with the calibrated attack unless --mia names another.
    "overfit-random": {
        "clients": 2,
        "mia": "calibrated",
        "deletion": {"mode": "random", "share": 0.3, "deleting_clients": None, "round": 20},
        "data": {"train_samples": 100},
        "train": {"rounds": 21, "local_epochs": 20, "batch_size": 20, "lr": 0.02},
    },
}
"""Named deletion scenarios: overrides of the sweep's base configuration."""

PARTITIONS: dict[str, dict[str, Any]] = {
    "iid": {"data": {"partition": "iid"}},
    "dirichlet-0.3": {"data": {"partition": "dirichlet", "alpha": 0.3}},
    "dirichlet-0.1": {"data": {"partition": "dirichlet", "alpha": 0.1}},
    "shards-2": {"data": {"partition": "shards", "shards_per_client": 2}},
}
"""Named partitions of the clients' data."""

DEFAULT_SCENARIOS = ("backdoor-6%", "class-3", "style-client", "mislabeled", "overfit-20")
"""The cells where ``none`` fails a check (issue 33): random-4% and client-5 delete data a
20-client MNIST model already scores like unseen data, so they cannot tell forgetting from
doing nothing (they stay available by name)."""
DEFAULT_PARTITIONS = ("iid", "dirichlet-0.3")
DEFAULT_SEEDS = (0, 1, 2)
SWEEP_REFERENCE_SEEDS = 3
"""A sweep's reference band: this many retrains per cell unless ``reference_seeds`` is set."""
PHASE_KEYS = frozenset(PhaseMetrics.model_fields)
TABLE = (
    ("after_unlearning.test_accuracy", "test after unl.", 100.0),
    ("after_recovery.test_accuracy", "test after rec.", 100.0),
    ("end.test_accuracy", "test end", 100.0),
    ("end.forget_accuracy", "D_f end", 100.0),
    ("end.forget_test_accuracy", "D_tf end", 100.0),
    ("end.backdoor_success", "backdoor end", 100.0),
    ("after_recovery.mia_success", "MIA", 100.0),
    ("deletion_rounds", "(unl.+rec.)/round", 1.0),
)


@dataclass(frozen=True)
class Cell:
    """One point of the matrix: a scenario on a partition with one seed."""

    scenario: str
    partition: str
    seed: int

    @property
    def name(self) -> str:
        """A folder-safe name."""
        return f"{self.scenario}__{self.partition}__seed{self.seed}".replace("%", "pct")


def parse_names(text: str | None, known: dict[str, Any], default: tuple[str, ...], what: str):
    """``"a,b"`` -> names checked against ``known`` (``None``: the default)."""
    if text is None:
        return list(default)
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ConfigError(f"unknown {what} {unknown or text!r}; known: {', '.join(known)}")
    return names


def parse_seeds(text: str | None) -> list[int]:
    """``"0,1,2"`` -> [0, 1, 2]."""
    if text is None:
        return list(DEFAULT_SEEDS)
    try:
        seeds = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ConfigError(f"--seeds expects comma-separated integers, got '{text}'") from None
    if not seeds:
        raise ConfigError("--seeds needs at least one seed")
    return seeds


def cell_config(base: SimulationConfig, cell: Cell, out_dir: Path) -> SimulationConfig:
    """The base configuration with the cell's scenario, partition, seed and folder.

    Only what the user set is carried over from the base: a value left to its default takes
    the default of the cell's partition (:data:`fedforget.config.PARTITION_DEFAULTS`) where it
    has one of its own.
    """
    values = json.loads(base.model_dump_json(exclude_unset=True))
    scenario = dict(SCENARIOS[cell.scenario])
    if base.mia is not None:  # the user's attack over the scenario's
        scenario.pop("mia", None)
    values = merge_sections(values, scenario)
    values = merge_sections(values, PARTITIONS[cell.partition])
    values.update(seed=cell.seed, out=str(out_dir / "cells" / cell.name), reference="none")
    if "reference_seeds" not in base.model_fields_set:  # a sweep's reference is a band
        values["reference_seeds"] = SWEEP_REFERENCE_SEEDS
    try:
        config = validate_config(values)
        check_single_deletion(config)
        config = resolve_training(config)  # per cell: its data decides
    except ConfigError as err:
        raise ConfigError(f"scenario {cell.scenario} on {cell.partition}: {err}") from None
    return config


def sweep_rows(cell: Cell, config: SimulationConfig, result: Comparison) -> list[dict[str, Any]]:
    """One flat row per strategy of a cell's comparison (the original model's row dropped).

    The retrains of the reference band are rows of strategy ``retrain`` (``member`` names
    each); ``cell_status`` is ``ok`` or what makes the cell unfit for comparison (the
    comparison's findings: not learned, not converged, a diverged reference).
    """
    findings = sorted({finding["name"] for finding in result.findings})
    status = ", ".join(findings) or OK
    rows = []
    for row in result.rows:
        if row["strategy"] == ORIGINAL or row.get("refused"):  # a refusal has no metrics
            continue
        details = result.details.get(row["strategy"], {})
        rounds = details.get("round_seconds") or []
        # the median: the first round also starts the actors and loads the data
        round_seconds = statistics.median(rounds) if rounds else None
        flat: dict[str, Any] = {
            "scenario": cell.scenario,
            "partition": cell.partition,
            "seed": cell.seed,
            "strategy": RETRAIN if is_reference(row["strategy"]) else row["strategy"],
            "member": row["strategy"],
            "cell_status": status,
            "mode": config.deletion.mode,
            "dataset": config.data.dataset,
            "unlearning_seconds": details.get("unlearning_seconds"),
            "recovery_seconds": details.get("recovery_seconds"),
            "relay_hops": details.get("relay_hops"),
            "relay_stop": details.get("relay_stop"),
            "round_seconds": round_seconds,
        }
        for key, value in row.items():
            if key == "strategy":
                continue
            flat[f"after_recovery.{key}" if key in PHASE_KEYS else key] = value
        deletion = (flat["unlearning_seconds"] or 0.0) + (flat["recovery_seconds"] or 0.0)
        flat["deletion_rounds"] = deletion / round_seconds if round_seconds else None
        before = flat.get("after_unlearning.test_accuracy")
        after = flat.get("after_recovery.test_accuracy")
        flat["relay_gain"] = after - before if is_number(before) and is_number(after) else None
        rows.append(flat)
    return rows


CellRunner = Callable[[SimulationConfig, list[str], int], Comparison]


def finished_cell(config: SimulationConfig, names: list[str]) -> Comparison | None:
    """The comparison an earlier sweep left in the cell's folder, if it is this cell's.

    It is reused only if it ran exactly this configuration (same code defaults included)
    and every strategy in ``names``; a cell that was interrupted has no ``compare.json``.
    """
    out = Path(config.out)
    try:
        saved = json.loads((out / "compare.json").read_text())
    except (OSError, ValueError):
        return None
    if saved.get("config") != json.loads(config.to_json()):
        return None
    rows = saved.get("rows", [])
    if not set(names) <= {row.get("strategy") for row in rows}:
        return None
    return Comparison(
        rows,
        out,
        saved["config"],
        saved.get("base_seconds", 0.0),
        saved.get("details", {}),
        saved.get("after_rounds", 0),
        saved.get("trajectory", []),
        saved.get("findings", []),
    )


def run_sweep(
    base: SimulationConfig,
    cells: list[Cell],
    strategies: list[str],
    out_dir: Path,
    run_cell: CellRunner,
    report: Callable[[str], None] = lambda _line: None,
    resume: bool = False,
) -> dict[str, Any]:
    """Run every cell (``run_cell(config, strategies, after_rounds)``); write the tables.

    Every cell's configuration is validated before the first one runs. With ``resume`` a
    cell that an earlier sweep into ``out_dir`` finished (:func:`finished_cell`) is read
    back instead of run: a matrix of hours can be stopped and continued.
    """
    configs = [(cell, cell_config(base, cell, out_dir)) for cell in cells]
    names = [RETRAIN, *(s for s in strategies if s not in (RETRAIN, NONE)), NONE]
    strategies = names[1:]
    rows: list[dict[str, Any]] = []
    payload: dict[str, Any] = {}
    started = time.perf_counter()
    for index, (cell, config) in enumerate(configs, start=1):
        cell_started = time.perf_counter()
        after_rounds = config.train.rounds - config.deletion.rounds[0]
        expected = branch_names(names, config.reference_seeds)
        result = finished_cell(config, expected) if resume else None
        reused = result is not None
        if result is None:
            result = run_cell(config, names, after_rounds)
        rows += sweep_rows(cell, config, result)
        seconds = time.perf_counter() - cell_started
        done = "read from an earlier sweep" if reused else f"{seconds:.0f} s"
        report(f"cell {index}/{len(configs)} {cell.name}: {done}")
        payload = _write(out_dir, rows, strategies, time.perf_counter() - started)
    return payload


def _write(
    out_dir: Path, rows: list[dict[str, Any]], strategies: list[str], seconds: float
) -> dict[str, Any]:
    """``sweep.csv`` (a row per cell and strategy), ``sweep.json``, ``sweep.md``, ``sweep.png``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    gapped = add_band(rows)
    columns = list(dict.fromkeys(key for row in gapped for key in row))
    with (out_dir / "sweep.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in gapped:
            writer.writerow({k: "" if row.get(k) is None else row[k] for k in columns})
    entries = aggregate(gapped)
    fit = aggregate([row for row in gapped if row["cell_status"] == OK])
    found = discriminating(fit)
    counted = {key for key, check in found.items() if check is not None}
    checks = [
        c
        for s in strategies
        if s != NONE
        for c in acceptance(fit, s)
        if (c.scenario, c.partition) in counted
    ]
    text = [
        f"# fedforget sweep ({len(rows)} rows, {seconds:.0f} s)",
        "",
        "Mean ± std over seeds; accuracies and attack rates in %. `retrain` is the band of "
        "each cell's retrains (the reference seeds); `none` is the model as it was.",
        "",
        markdown(entries, TABLE),
        "",
        "## Cells unfit for comparison (left out of the checks)",
        "",
        unfit_markdown(gapped),
        "",
        "## Discriminative cells: what `none` fails",
        "",
        "A cell counts toward acceptance only where `none` fails a check by a clear margin "
        f"(at least {CLEAR_MARGIN * 100:g} pt beyond its bound).",
        "",
        discrimination_markdown(found),
        "",
        "## Acceptance checks (means over seeds; discriminative, fit cells)",
        "",
        checks_markdown(checks),
        "",
    ]
    (out_dir / "sweep.md").write_text("\n".join(text))
    payload = {
        "seconds": seconds,
        "rows": gapped,
        "checks": [c.__dict__ for c in checks],
        "unfit_cells": sorted(
            {
                f"{r['scenario']}|{r['partition']}|{r['seed']}"
                for r in gapped
                if r["cell_status"] != OK
            }
        ),
        "discriminative": {
            f"{s}|{p}": None if c is None else c.__dict__ for (s, p), c in found.items()
        },
    }
    (out_dir / "sweep.json").write_text(json.dumps(payload, indent=2) + "\n")
    from fedforget.report.plot import plot_sweep

    plot_sweep(entries, out_dir / "sweep.png")
    return payload
