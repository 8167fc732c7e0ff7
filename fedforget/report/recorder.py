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
        reference_state: dict[str, Any] | None,
        deletion: DeletionSummary,
        extra: dict[str, Any],
    ) -> Summary:
        """Compute final and reference metrics, write every file, return the summary."""
        final_model = self.model(final_state)
        self.checkpoint("final", final_state)
        reference = None
        if reference_state is not None:
            reference_model = self.model(reference_state)
            distances = self.evaluator.divergence(final_model, reference_model)
            reference = Reference(final=self.evaluator.evaluate(reference_model), **distances)
            _save_state(reference_state, self.out_dir / REFERENCE_MODEL_FILE)
        _save_state(final_state, self.out_dir / MODEL_FILE)
        summary = Summary(
            fedforget_version=__version__,
            strategy=self.config.strategy,
            phases=self.phases,
            reference=reference,
            deletion=deletion,
            out_dir=str(self.out_dir),
            config=json.loads(self.config.to_json()),
            **extra,
        )
        write_summary(summary, self.out_dir)
        _plot(self.rounds, summary, self.out_dir / PLOT_FILE)
        return summary


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
