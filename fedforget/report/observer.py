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
