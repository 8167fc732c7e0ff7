"""Events a run emits, so displays and recorders stay out of the strategy's logic."""

from __future__ import annotations

from typing import Any


class RunObserver:
    """Receives a run's events; every method is a no-op here, override what you need.

    ``model_state`` arguments are NumPy state dicts of the global model at that moment, so an
    observer can evaluate it without knowing Flower.
    """

    def run_started(self, phase: str, total_rounds: int) -> None:
        """A sequence of FedAvg rounds starts (``phase``: ``federated``, ``retrain``, ...)."""

    def round_finished(self, phase: str, server_round: int, info: dict[str, Any]) -> None:
        """One FedAvg round finished; ``info`` holds timings and client-reported numbers."""

    def round_model(self, phase: str, server_round: int, model_state: dict[str, Any]) -> None:
        """The global model after a round (for per-round metrics)."""

    def checkpoint(self, name: str, model_state: dict[str, Any]) -> None:
        """A named phase was reached: ``before_deletion``, ``after_unlearning``, ..."""

    def progress(self, phase: str, step: int, total: int, info: dict[str, float]) -> None:
        """Fine-grained progress: unlearning epochs, relay hops."""


class CheckpointObserver(RunObserver):
    """Forwards events to a display, phases prefixed by ``label``; keeps named checkpoints.

    ``fedforget compare`` gives each branch one (labelled with the strategy's name), so the
    display tells the branches apart and the comparison reads each branch's model states.
    """

    def __init__(self, display: RunObserver | None = None, label: str = "") -> None:
        self.display = display or RunObserver()
        self.label = label
        self.states: dict[str, dict[str, Any]] = {}
        self.train_losses: dict[str, list[float]] = {}
        """Per phase, each round's training loss (divergence shows there first)."""

    def run_started(self, phase: str, total_rounds: int) -> None:
        self.train_losses[phase] = []
        self.display.run_started(self._name(phase), total_rounds)

    def round_finished(self, phase: str, server_round: int, info: dict[str, Any]) -> None:
        self.train_losses.setdefault(phase, []).append(float(info.get("train_loss", "nan")))
        self.display.round_finished(self._name(phase), server_round, info)

    def checkpoint(self, name: str, model_state: dict[str, Any]) -> None:
        self.states[name] = model_state

    def progress(self, phase: str, step: int, total: int, info: dict[str, float]) -> None:
        self.display.progress(self._name(phase), step, total, info)

    def _name(self, phase: str) -> str:
        return f"{self.label}: {phase}" if self.label else phase
