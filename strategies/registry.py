"""Strategy names -> Flower strategies built from a validated configuration."""

from __future__ import annotations

import torch

from fedforget.config import ConfigError, SimulationConfig
from fedforget.report import RunObserver
from fedforget.strategies.unlearning import FederatedUnlearning, ModelFactory, Retrain
from fedforget.unlearning import build_unlearner, unlearner_names

RETRAIN = "retrain"
STRATEGY_NAMES: tuple[str, ...] = (*unlearner_names(), RETRAIN)


def check_strategy_name(name: str) -> None:
    """Raise :class:`ConfigError` for a strategy name that is not registered."""
    if name not in STRATEGY_NAMES:
        raise ConfigError(f"unknown strategy '{name}'; choose one of: {', '.join(STRATEGY_NAMES)}")


def build_strategy(
    config: SimulationConfig,
    *,
    build_model: ModelFactory,
    num_classes: int,
    observer: RunObserver | None = None,
    device: torch.device | None = None,
    message_config: dict | None = None,
) -> FederatedUnlearning:
    """The strategy named by ``config.strategy``, with the run's settings."""
    check_strategy_name(config.strategy)
    options = dict(
        build_model=build_model,
        message_config=message_config,
        recovery=config.recovery,
        relay_lr=config.recovery.lr or config.train.lr,
        num_classes=num_classes,
        mode=config.deletion.mode,
        forget_classes=config.deletion.forget_classes,
        client_leaves=config.deletion.mode == "client",
        observer=observer,
        device=device,
        seed=config.seed,
        fraction_train=config.train.fraction_train,
        min_available_nodes=config.clients,
    )
    if config.strategy == RETRAIN:
        return Retrain(**options)
    settings = config.unlearning.model_dump() if config.strategy == "distill" else {}
    return FederatedUnlearning(unlearner=build_unlearner(config.strategy, **settings), **options)
