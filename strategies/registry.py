"""Strategy names -> Flower strategies built from a validated configuration."""

from __future__ import annotations

from collections.abc import Callable

import torch

from fedforget.config import ConfigError, SimulationConfig
from fedforget.data.sources import ArrayDataset
from fedforget.gan import ConditionalGan
from fedforget.report import RunObserver
from fedforget.strategies.settings import StrategySettings
from fedforget.strategies.unlearning import FederatedUnlearning, ModelFactory, Retrain
from fedforget.unlearning import Unlearner, configured_unlearner, unlearner_names

RETRAIN = "retrain"


def strategy_names() -> list[str]:
    """Every registered unlearner, plus ``retrain`` (baseline B1)."""
    return [*unlearner_names(), RETRAIN]


def check_strategy_name(name: str) -> None:
    """Raise :class:`ConfigError` for a strategy name that is not registered."""
    if name not in strategy_names():
        choices = ", ".join(strategy_names())
        raise ConfigError(f"unknown strategy '{name}'; choose one of: {choices}")


build_configured_unlearner = configured_unlearner
"""The core's :func:`fedforget.unlearning.configured_unlearner`, under its former name."""


def build_strategy(
    config: SimulationConfig,
    *,
    build_model: ModelFactory,
    num_classes: int,
    observer: RunObserver | None = None,
    device: torch.device | None = None,
    build_gan: Callable[[], ConditionalGan] | None = None,
    image_shape: tuple[int, ...] = (1, 1, 1),
    branch: str | None = None,
    validation: ArrayDataset | None = None,
    train_seed: int | None = None,
) -> FederatedUnlearning:
    """The strategy named by ``config.strategy``, with the run's settings.

    The clients receive ``config`` (and ``branch``) in every message; the strategy's settings
    come from the same object (:class:`StrategySettings`). ``train_seed`` gives a retrain
    initial weights and batch orders of its own (a member of the reference band).
    """
    check_strategy_name(config.strategy)
    settings = StrategySettings.from_config(
        config, num_classes=num_classes, image_shape=image_shape, branch=branch
    )
    parts = dict(
        build_model=build_model,
        observer=observer,
        device=device,
        build_gan=build_gan,
        validation=validation,
    )
    if config.strategy == RETRAIN:
        return Retrain(settings, train_seed=train_seed, **parts)
    unlearner = build_configured_unlearner(config, config.strategy)
    if config.unlearn_on == "client":
        check_client_side(unlearner)
    return FederatedUnlearning(settings, unlearner=unlearner, **parts)


def check_client_side(unlearner: Unlearner) -> None:
    """A client can unlearn alone only with what it holds: its D_f (the ``forget`` need)."""
    extra = sorted(set(unlearner.needs) - {"forget"})
    if extra:
        raise ConfigError(
            f"--unlearn-on client: {unlearner.name} needs {', '.join(extra)} from other "
            "clients or past rounds; only methods that need D_f alone can run on a client"
        )
