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
4. each branch's model is scored, with its deletion step's cost (bytes each way, client,
   server and wall seconds: :func:`cost`); speed-ups against ``retrain``; rows to
   CSV/JSON/Markdown.

A :class:`BranchTask` supplies what differs. The runner needs only a Flower ``Grid``, so a
sweep can call :func:`run_branches` (or ``run_comparison``) once per cell, inside one Flower
simulation per cell, and use the returned rows.
"""

from __future__ import annotations

import csv
import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
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
from fedforget.strategies.messaging import arrays_from
from fedforget.strategies.unlearning import band_seed

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
    after_rounds: int = 0
    """FedAvg rounds each branch ran after its deletion (the ``end.*`` metrics)."""
    trajectory: list[float] = field(default_factory=list)
    """The federation's test accuracy after each round up to the deletion (the checkpoint)."""
    findings: list[dict[str, str]] = field(default_factory=list)
    """What makes a model unfit for comparison (:mod:`fedforget.report.sanity`): ``name``,
    ``message`` and the ``row`` it concerns (``original`` or a reference)."""

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

    def round_score(self, arrays: ArrayRecord) -> float | None:
        """The federation's test accuracy after a round (``None``: not measured)."""
        return None

    def sanity(
        self, rows: list[dict[str, Any]], trajectory: list[float], losses: dict[str, list[float]]
    ) -> list[dict[str, str]]:
        """Findings on the original model and the references (``losses``: each branch's
        training losses of its deletion step's rounds); none by default."""
        return []

    def score_phase(self, arrays: ArrayRecord) -> dict[str, Any]:
        """The phase metrics of a model at a point other than the branch's row (after the
        unlearning alone, after the rounds that follow the deletion).

        Tasks that do not support phases refuse ``after_rounds`` in :meth:`check_phases`.
        """
        raise NotImplementedError

    def check_phases(self, after_rounds: int) -> None:  # noqa: B027 (optional hook)
        """Raise :class:`ConfigError` when this task cannot score the phases asked for."""

    @abstractmethod
    def details(self, strategy: FederatedUnlearning) -> dict[str, Any]:
        """What branch ``strategy``'s deletion step did (for the JSON file)."""

    def finish(self, rows: list[dict[str, Any]]) -> None:  # noqa: B027 (optional hook)
        """Fill the columns that need every row (after the speed-ups); nothing by default."""

    @abstractmethod
    def write(self, result: Comparison) -> None:
        """Write the result's files into ``result.out_dir``."""


def check_single_deletion(config: SimulationConfig) -> None:
    """Branches carry out one deletion from one checkpoint: sequential deletion steps
    (several ``--deletion-round``) run in ``simulate``, not in ``compare``."""
    if len(config.deletion.rounds) > 1:
        raise ConfigError(
            "compare branches one deletion from one checkpoint; run sequential deletions "
            "(several --deletion-round) with simulate"
        )


BAND_SEPARATOR = ":"


def reference_band(count: int) -> list[str]:
    """The reference retrains' branch names: ``retrain``, ``retrain:2``, ..., ``retrain:K``."""
    return [RETRAIN, *(f"{RETRAIN}{BAND_SEPARATOR}{k}" for k in range(2, count + 1))]


def band_member(name: str, seed: int) -> tuple[str, int | None]:
    """``(strategy, train seed)`` of a branch: a band member retrains with its own seed."""
    base, _, number = name.partition(BAND_SEPARATOR)
    if base != RETRAIN or not number:
        return name, None
    return RETRAIN, band_seed(seed, int(number))


def is_reference(name: str) -> bool:
    """Whether branch ``name`` is a retrain of the reference band."""
    return band_member(name, 0)[0] == RETRAIN


def branch_names(strategies: list[str], reference_seeds: int = 1) -> list[str]:
    """The reference band first (``retrain`` and its seeds), then the other strategies in
    their given order."""
    return [*reference_band(reference_seeds), *(s for s in strategies if s != RETRAIN)]


def run_branches(
    grid: Grid,
    task: BranchTask,
    strategies: list[str],
    display: RunObserver | None = None,
    after_rounds: int = 0,
) -> Comparison:
    """Train to the deletion round once, branch every strategy from there; score and write.

    Each branch's row describes its model right after the deletion step (unlearning, plus the
    relay for methods that include it). With ``after_rounds`` > 0 the row also holds the
    phase metrics after the unlearning alone (``after_unlearning.<metric>``) and after
    ``after_rounds`` further FedAvg rounds on the remaining data (``end.<metric>``): whether
    the forgetting lasts once training goes on (the "reverting" that FedOSD and paper 000's
    durability measurements see), and whether the model returns to retrain's level.

    Raises
    ------
    ConfigError
        When no client reported a deletion request by the deletion round.
    """
    config = task.config
    check_single_deletion(config)
    task.check_phases(after_rounds)
    out_dir = default_out_dir(config.model_copy(update={"strategy": task.label}))
    out_dir.mkdir(parents=True, exist_ok=True)
    initial = task.initial_arrays()
    names = branch_names(strategies, config.reference_seeds)
    observers = {name: CheckpointObserver(display, name) for name in names}
    branches = {name: task.strategy(name, name, obs) for name, obs in observers.items()}
    base = task.strategy(RETRAIN, None, CheckpointObserver(display))
    base.serve_branches(branches.values())
    started = time.perf_counter()
    trajectory: list[float] = []
    checkpoint = train_to_deletion(
        grid, base, initial, config.deletion.rounds[0], task.round_score, trajectory
    )
    base_seconds = time.perf_counter() - started
    rows = [{"strategy": ORIGINAL, **task.score_original(checkpoint, base, out_dir)}]
    details: dict[str, dict[str, Any]] = {}
    for name, strategy in branches.items():
        strategy.take_over(base)
        arrays = strategy.carry_out_deletion(grid, config.deletion.rounds[0], checkpoint)
        save_arrays(arrays, out_dir / "models" / f"{name}.pt")
        row = {"strategy": name, **task.score(name, arrays, out_dir), **cost(strategy)}
        if after_rounds:
            row.update(_later_phases(grid, task, strategy, observers[name], arrays, after_rounds))
        rows.append(row)
        details[name] = {**task.details(strategy), "round_seconds": base.round_seconds}
    fill_speedups(rows)
    task.finish(rows)
    losses = {name: obs.train_losses.get("retrain", []) for name, obs in observers.items()}
    settings = json.loads(config.to_json())
    result = Comparison(rows, out_dir, settings, base_seconds, details, after_rounds)
    result.trajectory = trajectory
    result.findings = task.sanity(rows, trajectory, losses)
    task.write(result)
    return result


def _later_phases(
    grid: Grid,
    task: BranchTask,
    strategy: FederatedUnlearning,
    observer: CheckpointObserver,
    arrays: ArrayRecord,
    after_rounds: int,
) -> dict[str, Any]:
    """``after_unlearning.*`` and, after ``after_rounds`` FedAvg rounds, ``end.*`` metrics."""
    phases: dict[str, Any] = {}
    unlearned = observer.states.get("after_unlearning")
    if unlearned is not None:
        phases["after_unlearning"] = task.score_phase(arrays_from(unlearned))
    later = strategy.run_rounds(grid, arrays, after_rounds, "after", handle_deletions=False)
    phases["end"] = task.score_phase(later.arrays)
    return {
        f"{phase}.{key}": value
        for phase, metrics in phases.items()
        for key, value in metrics.items()
    }


def train_to_deletion(
    grid: Grid,
    base: FederatedUnlearning,
    initial: ArrayRecord,
    deletion_round: int,
    score: Callable[[ArrayRecord], float | None] | None = None,
    trajectory: list[float] | None = None,
) -> ArrayRecord:
    """FedAvg up to the deletion round, without carrying the requests out: the checkpoint.

    ``score`` measures the model after every round into ``trajectory`` (whether the
    federation converged before the deletion).

    Raises
    ------
    ConfigError
        When no client reported a deletion request by then.
    """

    def evaluate(_: int, arrays: ArrayRecord) -> None:
        value = score(arrays) if score is not None else None
        if value is not None and trajectory is not None:
            trajectory.append(value)

    base.begin(initial)
    result = base.run_rounds(
        grid, initial, deletion_round, "federated", evaluate_fn=evaluate, handle_deletions=False
    )
    if not base.pending_deletions:
        raise ConfigError("no client reported a deletion request by the deletion round")
    return result.arrays


def cost(strategy: FederatedUnlearning) -> dict[str, Any]:
    """What branch ``strategy``'s deletion step cost (the row's cost columns).

    ``bytes_to_clients`` / ``bytes_from_clients``: payload bytes of every message of the step
    each way (:func:`fedforget.strategies.messaging.payload_bytes`); ``history_bytes``: the
    stored client updates the server kept for the method; ``client_seconds``: the compute the
    clients reported for the step; ``training_client_seconds``: the compute the method added to
    the clients' training before the deletion (MuGAN's GAN, QuickDrop's distillation, FedAU's
    auxiliary heads); ``server_seconds``: the step's wall time less the time it waited for
    replies; ``seconds``: the step's wall time (unlearning + recovery).
    """
    record = strategy.deletion
    return {
        "bytes_to_clients": record.bytes_to_clients,
        "bytes_from_clients": record.bytes_from_clients,
        "history_bytes": int(record.need_figure("history", "bytes")),
        "client_seconds": record.client_compute_seconds,
        "training_client_seconds": record.training_client_seconds(),
        "server_seconds": record.server_seconds,
        "seconds": record.wall_seconds,
    }


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
