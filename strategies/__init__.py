"""Flower server strategies: deletion handling, unlearning step, recovery relay."""

from fedforget.strategies.registry import STRATEGY_NAMES, build_strategy
from fedforget.strategies.unlearning import (
    Bookkeeping,
    DeletionRecord,
    FederatedUnlearning,
    Retrain,
)

__all__ = [
    "STRATEGY_NAMES",
    "Bookkeeping",
    "DeletionRecord",
    "FederatedUnlearning",
    "Retrain",
    "build_strategy",
]
