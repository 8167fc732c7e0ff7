"""Flower server strategies: deletion handling, unlearning step, recovery relay."""

from fedforget.strategies.ledger import Bookkeeping
from fedforget.strategies.registry import build_strategy, strategy_names
from fedforget.strategies.settings import StrategySettings
from fedforget.strategies.unlearning import FederatedUnlearning, Retrain

__all__ = [
    "Bookkeeping",
    "FederatedUnlearning",
    "Retrain",
    "StrategySettings",
    "build_strategy",
    "strategy_names",
]
