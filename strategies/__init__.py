"""Flower server strategies: deletion handling, unlearning step, recovery relay."""

from fedforget.strategies.registry import build_strategy, strategy_names
from fedforget.strategies.unlearning import (
    Bookkeeping,
    DeletionRecord,
    FederatedUnlearning,
    Retrain,
)

__all__ = [
    "Bookkeeping",
    "DeletionRecord",
    "FederatedUnlearning",
    "Retrain",
    "build_strategy",
    "strategy_names",
]
