"""Turns a run's events into metrics, files and display updates."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedforget import __version__
from fedforget.config import SimulationConfig
from fedforget.metrics import Evaluator, PhaseMetrics
from fedforget.models import ClassifierModel
from fedforget.report.observer import RunObserver
from fedforget.report.sanity import chance_level, diverged, run_findings
from fedforget.report.summary import DeletionSummary, Phases, Reference, Summary
from fedforget.training import load_numpy_state

SUMMARY_FILE = "summary.json"
ROUNDS_FILE = "rounds.jsonl"
MODEL_FILE = "model.pt"
REFERENCE_MODEL_FILE = "reference_model.pt"
PLOT_FILE = "metrics.png"


class Display(RunObserver):
    """A run observer that is also told the metrics the recorder computed."""

    def round_metrics(self, phase: str, server_round: int, metrics: PhaseMetrics) -> None:
        """Metrics of the global model after a round."""

    def checkpoint_metrics(self, name: str, metrics: PhaseMetrics) -> None:
        """Metrics at a named phase."""


class RunRecorder(RunObserver):
    """Evaluates the global model at every round and phase; writes the run folder.

    Parameters
    ----------
    config : SimulationConfig
        The validated configuration (stored in ``summary.json``).
    evaluator : Evaluator
        Computes the metrics.
    build_model : Callable[[], ClassifierModel]
        Makes a model to load states into.
    out_dir : Path
        The run folder.
    display : Display, optional
        Receives every event plus the computed metrics.
    """

    def __init__(
        self,
        config: SimulationConfig,
        evaluator: Evaluator,
        build_model: Callable[[], ClassifierModel],
        out_dir: Path,
        display: Display | None = None,
    ) -> None:
        self.config = config
        self.evaluator = evaluator
        self.build_model = build_model
        self.out_dir = out_dir
        self.display = display or Display()
        self.phases = Phases()
        self.rounds: list[dict[str, Any]] = []
        self._pending_round: dict[str, Any] = {}
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / ROUNDS_FILE).write_text("")

    def model(self, state: dict[str, Any]) -> ClassifierModel:
        """A model holding ``state``."""
        return load_numpy_state(self.build_model(), state)

    # RunObserver ---------------------------------------------------------------
    def run_started(self, phase: str, total_rounds: int) -> None:
        self.display.run_started(phase, total_rounds)

    def round_finished(self, phase: str, server_round: int, info: dict[str, Any]) -> None:
        self._pending_round = {"phase": phase, "round": server_round, **info}
        self.display.round_finished(phase, server_round, info)

    def round_model(self, phase: str, server_round: int, model_state: dict[str, Any]) -> None:
        metrics = self.evaluator.evaluate(self.model(model_state))
        row = {**self._pending_round, **metrics.model_dump()}
        self.rounds.append(row)
        with (self.out_dir / ROUNDS_FILE).open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        self.display.round_metrics(phase, server_round, metrics)

    def checkpoint(self, name: str, model_state: dict[str, Any]) -> None:
        metrics = self.evaluator.evaluate(self.model(model_state))
        setattr(self.phases, name, metrics)
        self.rounds.append({"phase": "checkpoint", "checkpoint": name, **metrics.model_dump()})
        self.display.checkpoint_metrics(name, metrics)

    def progress(self, phase: str, step: int, total: int, info: dict[str, float]) -> None:
        self.display.progress(phase, step, total, info)

    # Results -------------------------------------------------------------------
    def finish(
        self,
        *,
        final_state: dict[str, Any],
        reference_states: list[dict[str, Any]],
        deletion: DeletionSummary,
        extra: dict[str, Any],
    ) -> Summary:
        """Compute final and reference metrics, write every file, return the summary.

        ``reference_states``: the retrains of the reference band, the first one the
        reference of the distances (empty: no reference).
        """
        final_model = self.model(final_state)
        self.checkpoint("final", final_state)
        reference = None
        if reference_states:
            reference = self._reference(final_model, reference_states)
            _save_state(reference_states[0], self.out_dir / REFERENCE_MODEL_FILE)
        _save_state(final_state, self.out_dir / MODEL_FILE)
        summary = Summary(
            fedforget_version=__version__,
            strategy=self.config.strategy,
            phases=self.phases,
            reference=reference,
            deletion=deletion,
            out_dir=str(self.out_dir),
            warnings=self._warnings(reference),
            config=json.loads(self.config.to_json()),
            **extra,
        )
        write_summary(summary, self.out_dir)
        _plot(self.rounds, summary, self.out_dir / PLOT_FILE)
        return summary

    def _reference(self, final_model: ClassifierModel, states: list[dict[str, Any]]) -> Reference:
        """The band's first retrain with its distances to the final model, the band's spread,
        the retrain at the deletion round, and whether it is a reference at all."""
        first = self.model(states[0])
        finals = [self.evaluator.evaluate(first)]
        finals += [self.evaluator.evaluate(self.model(state)) for state in states[1:]]
        rows = [r for r in self.rounds if r.get("phase") == "reference"]
        at_deletion = next((r for r in rows if r["round"] == self.config.deletion.rounds[0]), None)
        chance = chance_level(self.evaluator.federation.test.y)
        losses = [float(r.get("train_loss", "nan")) for r in rows]
        finding = diverged("the retrain reference", losses, finals[0].test_accuracy, chance)
        return Reference(
            final=finals[0],
            **self.evaluator.divergence(final_model, first),
            at_deletion=None if at_deletion is None else _phase_metrics(at_deletion),
            members=len(states),
            band=_band([m.model_dump() for m in finals]) if len(finals) > 1 else {},
            status="ok" if finding is None else finding.message,
        )

    def _warnings(self, reference: Reference | None) -> list[str]:
        """One line per finding that makes the run's comparison doubtful."""
        before = self.phases.before_deletion
        if before is None:
            return [] if reference is None or reference.status == "ok" else [reference.status]
        chance = chance_level(self.evaluator.federation.test.y)
        lines = run_findings(
            self.rounds, before.test_accuracy, chance, self.config.deletion.rounds[0]
        )
        if reference is not None and reference.status != "ok":
            lines.append(reference.status)
        return lines


def _phase_metrics(row: dict[str, Any]) -> PhaseMetrics:
    return PhaseMetrics(**{k: row.get(k) for k in PhaseMetrics.model_fields})


def _band(metrics: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Each numeric metric's mean and sample std over the band's retrains."""
    band = {}
    for key in metrics[0]:
        values = [m[key] for m in metrics if isinstance(m.get(key), int | float)]
        if len(values) == len(metrics):
            band[key] = {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1))}
    return band


def write_summary(summary: Summary, out_dir: Path) -> Path:
    """Write ``summary.json`` (NaN written as null) and return its path."""
    path = out_dir / SUMMARY_FILE
    path.write_text(summary.model_dump_json(indent=2))
    return path


def _save_state(state: dict[str, Any], path: Path) -> None:
    torch.save({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}, path)


def _plot(rounds: list[dict[str, Any]], summary: Summary, path: Path) -> None:
    os.environ.setdefault("MPLBACKEND", "Agg")
    from fedforget.report.plot import plot_run

    plot_run(rounds, summary, path)
