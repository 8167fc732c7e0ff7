"""The GAN task's strategies: FedAvg of a conditional GAN, with GAN unlearning at a deletion.

``fedforget simulate --task gan``: the clients train the federation's
:class:`~fedforget.gan.ConditionalGan` (generator *and* discriminator) locally
(``train.gan``) and the server averages them. When clients report deletion requests (item:
specific images, ``--mode item``; or a class, ``--mode class``) the deletion step runs as for a
classifier (:class:`~fedforget.strategies.FederatedUnlearning`): D_f from the requesting clients
(``query.forget_data``), for few-shot methods some remaining images from every client
(``query.retain_data``, the learning images of paper 001 section 4.1), the clients drop D_f
(``query.deletion_complete``), then the GAN unlearner runs on the server. No recovery relay:
paper 001's cascade has its own learning steps.

Strategy names: every registered GAN unlearner, the presets of :data:`GAN_PRESETS` (named
variants of ``cascaded``), and ``retrain`` (the baseline of paper 001 section 5.3: FedAvg of
the GAN again from its initial weights, without the deleted images).
"""

from __future__ import annotations

from typing import Any

from flwr.app import ArrayRecord
from flwr.serverapp import Grid

from fedforget import protocol as P
from fedforget.config import ConfigError, SimulationConfig
from fedforget.gan.unlearner import (
    GanUnlearner,
    GanUnlearningRequest,
    build_gan_unlearner,
    gan_unlearner_names,
)
from fedforget.needs import ForgetNeed, RetainNeed
from fedforget.strategies.settings import StrategySettings
from fedforget.strategies.unlearning import FederatedUnlearning

RETRAIN = "retrain"
GAN_PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "cascaded-zero": ("cascaded", {"shot": "zero"}),
    "cascaded-truncation": ("cascaded", {"substitute": "truncation"}),
    "cascaded-projection": ("cascaded", {"substitute": "projection"}),
    "cascaded-other-class": ("cascaded", {"substitute": "other-class"}),
}
"""Named variants of paper 001's method: ``name -> (unlearner, options)``."""


def gan_strategy_names() -> list[str]:
    """GAN unlearners, their named presets, and ``retrain``."""
    return [*gan_unlearner_names(), *GAN_PRESETS, RETRAIN]


def build_configured_gan_unlearner(config: SimulationConfig, name: str) -> GanUnlearner:
    """The GAN unlearner (or preset) ``name`` with the user's options for that name."""
    if name not in gan_strategy_names() or name == RETRAIN:
        choices = ", ".join(gan_strategy_names())
        raise ConfigError(f"unknown GAN strategy '{name}'; choose one of: {choices}")
    base, preset = GAN_PRESETS.get(name, (name, {}))
    options = {**preset, **config.methods.options.get(name, {})}
    return build_gan_unlearner(base, **options)


class FederatedGan(FederatedUnlearning):
    """FedAvg of a conditional GAN with deletion requests and server-side GAN unlearning.

    Parameters
    ----------
    settings : StrategySettings
        Built from the run's configuration (the GAN task's).
    gan_unlearner : GanUnlearner or None
        The method run at the deletion (``None`` for :class:`GanRetrain`).
    **parts
        As for :class:`FederatedUnlearning`; ``build_model`` makes the
        :class:`~fedforget.gan.ConditionalGan`.
    """

    train_message = P.TRAIN_GAN

    def __init__(
        self, settings: StrategySettings, *, gan_unlearner: GanUnlearner | None, **parts: Any
    ) -> None:
        super().__init__(settings, unlearner=None, **parts)
        self.gan_unlearner = gan_unlearner
        self.unlearning_report: dict[str, Any] = {}
        self.needset.attach_forget = False  # D_f is asked for at the deletion

    def unlearn_step(
        self, grid: Grid, server_round: int, arrays: ArrayRecord, nodes: list[int]
    ) -> ArrayRecord:
        """Gather D_f (and learning images for few-shot methods), then unlearn the GAN."""
        if self.gan_unlearner is None:
            raise RuntimeError("FederatedGan needs a GAN unlearner")
        few_shot = getattr(self.gan_unlearner.settings, "shot", "few") == "few"
        step = self.step.gather_step(grid, nodes)
        wanted = [ForgetNeed.name, RetainNeed.name] if few_shot else [ForgetNeed.name]
        gathered = self.needset.gather(step, wanted)
        self.gathering.complete_deletion(grid, step.nodes)
        learning = gathered.request.get("retain")
        request = GanUnlearningRequest(
            unlearning=gathered.request["forget"],
            mode=step.mode.gan_mode,
            forgotten_classes=step.forget_classes,
            learning=learning,
        )
        result = self.gan_unlearner.unlearn(
            self.model_from(arrays), request, device=self.device, progress=self.observer.progress
        )
        self.unlearning_report = {
            "iterations": result.iterations,
            "seconds": result.seconds,
            "inversion_seconds": result.inversion_seconds,
            "inversion_error": result.inversion_error,
            "auc_trajectory": result.auc_trajectory,
            "reached_destination": result.reached_destination,
            "shot": result.shot,
            "learning_images": len(learning) if learning is not None else 0,
        }
        return ArrayRecord(result.gan.cpu().state_dict())


class GanRetrain(FederatedGan):
    """Paper 001's baseline: FedAvg of the GAN again from w_0, without the deleted images."""

    def __init__(self, settings: StrategySettings, **parts: Any) -> None:
        super().__init__(settings, gan_unlearner=None, **parts)

    def unlearn_step(
        self, grid: Grid, server_round: int, arrays: ArrayRecord, nodes: list[int]
    ) -> ArrayRecord:
        """Drop the deleted images at the clients and rerun ``server_round`` rounds from w_0."""
        return self.retrain_from_initial(grid, server_round, nodes)


def build_gan_strategy(
    config: SimulationConfig,
    name: str,
    *,
    num_classes: int,
    branch: str | None = None,
    **parts: Any,
) -> FederatedGan:
    """The GAN-task strategy ``name`` (see :func:`gan_strategy_names`).

    ``parts`` are :class:`FederatedUnlearning`'s (``build_model``, ``observer``, ``device``).
    """
    settings = StrategySettings.from_config(config, num_classes=num_classes, branch=branch)
    if name == RETRAIN:
        return GanRetrain(settings, **parts)
    unlearner = build_configured_gan_unlearner(config, name)
    return FederatedGan(settings, gan_unlearner=unlearner, **parts)
