"""Strategy names -> Flower strategies built from a validated configuration."""

from __future__ import annotations

from collections.abc import Callable

import torch

from fedforget.config import ConfigError, SimulationConfig
from fedforget.gan import ConditionalGan
from fedforget.report import RunObserver
from fedforget.strategies.unlearning import FederatedUnlearning, ModelFactory, Retrain
from fedforget.unlearning import Unlearner, build_unlearner, unlearner_names

RETRAIN = "retrain"


def strategy_names() -> list[str]:
    """Every registered unlearner, plus ``retrain`` (baseline B1)."""
    return [*unlearner_names(), RETRAIN]


def check_strategy_name(name: str) -> None:
    """Raise :class:`ConfigError` for a strategy name that is not registered."""
    if name not in strategy_names():
        choices = ", ".join(strategy_names())
        raise ConfigError(f"unknown strategy '{name}'; choose one of: {choices}")


def build_configured_unlearner(config: SimulationConfig, name: str) -> Unlearner:
    """The unlearner ``name`` with its options from ``config`` (raises :class:`ConfigError`)."""
    settings = config.unlearning.model_dump() if name == "distill" else {}
    settings.update(config.methods.options.get(name, {}))
    return build_unlearner(name, **settings)


def build_strategy(
    config: SimulationConfig,
    *,
    build_model: ModelFactory,
    num_classes: int,
    observer: RunObserver | None = None,
    device: torch.device | None = None,
    message_config: dict | None = None,
    build_gan: Callable[[], ConditionalGan] | None = None,
    image_shape: tuple[int, ...] = (1, 1, 1),
) -> FederatedUnlearning:
    """The strategy named by ``config.strategy``, with the run's settings."""
    check_strategy_name(config.strategy)
    options = dict(
        build_model=build_model,
        message_config=message_config,
        recovery=config.recovery,
        relay_lr=config.recovery.lr or config.train.lr,
        local_epochs=config.train.local_epochs,
        local_lr=config.train.lr,
        retain_per_client=config.methods.retain_per_client,
        num_classes=num_classes,
        mode=config.deletion.mode,
        forget_classes=config.deletion.forget_classes,
        client_leaves=config.deletion.mode == "client",
        observer=observer,
        device=device,
        seed=config.seed,
        fraction_train=config.train.fraction_train,
        min_available_nodes=config.clients,
        build_gan=build_gan,
        generator_clients=config.gan.generator_clients,
        image_shape=image_shape,
    )
    if config.strategy == RETRAIN:
        return Retrain(**options)
    unlearner = build_configured_unlearner(config, config.strategy)
    if config.unlearn_on == "client":
        check_client_side(unlearner)
    return FederatedUnlearning(
        unlearner=unlearner, unlearn_on_client=config.unlearn_on == "client", **options
    )


def check_client_side(unlearner: Unlearner) -> None:
    """A client can unlearn alone only with what it holds: its D_f (the ``forget`` need)."""
    extra = sorted(set(unlearner.needs) - {"forget"})
    if extra:
        raise ConfigError(
            f"--unlearn-on client: {unlearner.name} needs {', '.join(extra)} from other "
            "clients or past rounds; only methods that need D_f alone can run on a client"
        )
