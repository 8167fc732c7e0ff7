"""One branch runner: train to the deletion round once, then let each strategy take over.

``fedforget compare`` (a classifier) and ``fedforget compare --task gan`` (a GAN) differ only
in the models they build and score; the pipeline is this module's :func:`run_branches`:

1. every branch's strategy is built (``retrain`` first: the reference of distances and
   speed-ups), and a base strategy that keeps what any branch needs;
2. the base trains the federation up to the deletion round, with the deletion requests
   arriving as in ``simulate``: the checkpoint;
3. each branch takes the base's federation state over and carries out the *same* deletion
   from the checkpoint, in the same Flower run (each branch named in its messages, so a
   client's deletion state in one branch does not leak into the next);
4. each branch's model is scored; speed-ups against ``retrain``; rows to CSV/JSON/Markdown.

A :class:`BranchTask` supplies what differs. The runner needs only a Flower ``Grid``, so a
sweep can call :func:`run_branches` (or ``run_comparison``) once per cell, inside one Flower
simulation per cell, and use the returned rows.
"""

from __future__ import annotations

import csv
import json
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord
from flwr.serverapp import Grid

from fedforget.config import ConfigError, SimulationConfig
from fedforget.report import RunObserver
from fedforget.report.observer import CheckpointObserver
from fedforget.server.app import default_out_dir
from fedforget.strategies import FederatedUnlearning

RETRAIN = "retrain"
ORIGINAL = "original"


@dataclass
class Comparison:
    """The outcome of a comparison: one row per strategy, after the original model's row."""

    rows: list[dict[str, Any]]
    out_dir: Path
    config: dict[str, Any]
    base_seconds: float = 0.0
    details: dict[str, dict[str, Any]] = field(default_factory=dict)

    def row(self, strategy: str) -> dict[str, Any]:
        """The row of one strategy (or of ``original``)."""
        return next(r for r in self.rows if r["strategy"] == strategy)


class BranchTask(ABC):
    """What one kind of comparison builds, scores and writes.

    Parameters
    ----------
    config : SimulationConfig
        The comparison's configuration (its ``strategy`` is replaced per branch).
    """

    label: str = "compare"
    """Names the default output folder (``runs/<time>-<label>-<mode>``)."""

    def __init__(self, config: SimulationConfig) -> None:
        self.config = config

    @abstractmethod
    def initial_arrays(self) -> ArrayRecord:
        """The federation's initial weights w_0 (seeded)."""

    @abstractmethod
    def strategy(self, name: str, branch: str | None, observer: RunObserver) -> FederatedUnlearning:
        """The strategy ``name``; ``branch`` names its messages (``None``: the base)."""

    @abstractmethod
    def score_original(
        self, checkpoint: ArrayRecord, base: FederatedUnlearning, out_dir: Path
    ) -> dict[str, Any]:
        """Keep the checkpoint (files, the scorer's reference points); the original's row."""

    @abstractmethod
    def score(self, name: str, arrays: ArrayRecord, out_dir: Path) -> dict[str, Any]:
        """The row of branch ``name``'s model (metric columns only)."""

    @abstractmethod
    def details(self, strategy: FederatedUnlearning) -> dict[str, Any]:
        """What branch ``strategy``'s deletion step did (for the JSON file)."""

    def finish(self, rows: list[dict[str, Any]]) -> None:  # noqa: B027 (optional hook)
        """Fill the columns that need every row (after the speed-ups); nothing by default."""

    @abstractmethod
    def write(self, result: Comparison) -> None:
        """Write the result's files into ``result.out_dir``."""


def branch_names(strategies: list[str]) -> list[str]:
    """``retrain`` first (the reference), then the other strategies in their given order."""
    return [RETRAIN, *(s for s in strategies if s != RETRAIN)]


def run_branches(
    grid: Grid,
    task: BranchTask,
    strategies: list[str],
    display: RunObserver | None = None,
) -> Comparison:
    """Train to the deletion round once, branch every strategy from there; score and write.

    Raises
    ------
    ConfigError
        When no client reported a deletion request by the deletion round.
    """
    config = task.config
    out_dir = default_out_dir(config.model_copy(update={"strategy": task.label}))
    out_dir.mkdir(parents=True, exist_ok=True)
    initial = task.initial_arrays()
    branches = {
        name: task.strategy(name, name, CheckpointObserver(display, name))
        for name in branch_names(strategies)
    }
    base = task.strategy(RETRAIN, None, CheckpointObserver(display))
    base.serve_branches(branches.values())
    started = time.perf_counter()
    checkpoint = train_to_deletion(grid, base, initial, config.deletion.round)
    base_seconds = time.perf_counter() - started
    rows = [{"strategy": ORIGINAL, **task.score_original(checkpoint, base, out_dir)}]
    details: dict[str, dict[str, Any]] = {}
    for name, strategy in branches.items():
        strategy.take_over(base)
        arrays = strategy.carry_out_deletion(grid, config.deletion.round, checkpoint)
        save_arrays(arrays, out_dir / "models" / f"{name}.pt")
        seconds = strategy.deletion.unlearning_seconds + strategy.deletion.recovery_seconds
        rows.append({"strategy": name, **task.score(name, arrays, out_dir), "seconds": seconds})
        details[name] = task.details(strategy)
    fill_speedups(rows)
    task.finish(rows)
    result = Comparison(rows, out_dir, json.loads(config.to_json()), base_seconds, details)
    task.write(result)
    return result


def train_to_deletion(
    grid: Grid, base: FederatedUnlearning, initial: ArrayRecord, deletion_round: int
) -> ArrayRecord:
    """FedAvg up to the deletion round, without carrying the requests out: the checkpoint.

    Raises
    ------
    ConfigError
        When no client reported a deletion request by then.
    """
    base.begin(initial)
    result = base.run_rounds(grid, initial, deletion_round, "federated", handle_deletions=False)
    if not base.pending_deletions:
        raise ConfigError("no client reported a deletion request by the deletion round")
    return result.arrays


def fill_speedups(rows: list[dict[str, Any]]) -> None:
    """``speedup_vs_retrain``: retrain's deletion seconds over each row's."""
    retrain = next(r for r in rows if r["strategy"] == RETRAIN)
    for row in rows:
        if row["strategy"] == ORIGINAL:
            continue
        row["speedup_vs_retrain"] = retrain["seconds"] / row["seconds"] if row["seconds"] else None


def save_arrays(arrays: ArrayRecord, path: Path) -> None:
    """The arrays as a torch state dict file (folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(arrays.to_torch_state_dict(), path)


def write_rows(
    out: Path, stem: str, rows: list[dict[str, Any]], columns: list[str], payload: dict
) -> None:
    """``<stem>.csv`` (``columns``; empty cells for missing values) and ``<stem>.json``."""
    with (out / f"{stem}.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row[k] for k in columns})
    (out / f"{stem}.json").write_text(json.dumps({"rows": rows, **payload}, indent=2) + "\n")
