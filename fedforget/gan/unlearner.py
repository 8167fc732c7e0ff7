"""The GAN-unlearning extension point: one interface, one registry.

A GAN unlearner turns a trained :class:`~fedforget.gan.networks.ConditionalGan` into one that
has forgotten a request's *unlearning images* (item unlearning: a few images of any classes;
class unlearning: all images of the forgotten classes). It never touches a client: the caller
hands it the unlearning images and, for the few-shot case, some *learning images* (remaining
data) in a :class:`GanUnlearningRequest`. Paper 001's cascaded unlearning
(:mod:`fedforget.gan.cascaded`) is the built-in method.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor

from fedforget.config import validated_options
from fedforget.data.sources import ArrayDataset
from fedforget.gan.networks import ConditionalGan
from fedforget.registry import Registry, UnknownNameError

__all__ = [
    "GAN_UNLEARNER_REGISTRY",
    "GanMode",
    "GanUnlearner",
    "GanUnlearnerSettings",
    "GanUnlearningRequest",
    "GanUnlearningResult",
    "ProgressFn",
    "UnknownGanUnlearnerError",
    "build_gan_unlearner",
    "gan_mode",
    "gan_unlearner_names",
    "register_gan_unlearner",
]


class GanMode(StrEnum):
    """What a GAN unlearning forgets (paper 001): chosen images, or whole classes."""

    ITEM = "item"
    CLASS = "class"


ProgressFn = Callable[[str, int, int, dict[str, float]], None]
"""Called as ``progress(phase, step, total, metrics)``."""


class UnknownGanUnlearnerError(UnknownNameError):
    """A GAN-unlearner name that is not registered."""


def gan_mode(value: str) -> GanMode:
    """``value`` as a :class:`GanMode` (a one-line ``ValueError`` for another word)."""
    try:
        return GanMode(value)
    except ValueError:
        raise ValueError(f"unknown GAN unlearning mode '{value}'; choose item or class") from None


@dataclass(frozen=True)
class GanUnlearningRequest:
    """What a GAN unlearner is to forget and the data it was given.

    Attributes
    ----------
    unlearning : ArrayDataset
        The unlearning images and their labels (sent by the deleting clients).
    mode : {"item", "class"}
        Item unlearning (images of any classes) or class unlearning.
    forgotten_classes : tuple of int
        Class mode: the forgotten classes (every unlearning image belongs to one of them).
    learning : ArrayDataset or None
        Few-shot: some remaining images; ``None`` for zero-shot.
    feature_extractor : callable or None
        ``phi`` of the perceptual terms, images -> features (e.g. a frozen classifier's
        ``embed``); needed only when a perceptual weight (here or in ``inversion``) is > 0.
    """

    unlearning: ArrayDataset
    mode: GanMode = GanMode.ITEM
    forgotten_classes: tuple[int, ...] = ()
    learning: ArrayDataset | None = None
    feature_extractor: Callable[[Tensor], Tensor] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", gan_mode(self.mode))
        if len(self.unlearning) == 0:
            raise ValueError("a GAN unlearning request needs at least one unlearning image")
        if self.mode == GanMode.CLASS:
            if not self.forgotten_classes:
                raise ValueError("class unlearning needs the forgotten classes")
            stray = sorted(set(self.unlearning.y.tolist()) - set(self.forgotten_classes))
            if stray:
                raise ValueError(f"unlearning images of class {stray[0]} are not forgotten")
            if self.learning is not None and np.isin(self.learning.y, self.forgotten_classes).any():
                raise ValueError("learning images must not belong to a forgotten class")

    @property
    def has_learning(self) -> bool:
        """Whether learning images were given."""
        return self.learning is not None and len(self.learning) > 0


@dataclass
class GanUnlearningResult:
    """The unlearned GAN and what it took.

    Attributes
    ----------
    gan : ConditionalGan
        The unlearned GAN (a copy; the input GAN is unchanged), in eval mode on the CPU.
    iterations : int
        Cascade iterations run (one unlearning + one learning step each).
    seconds : float
        Wall time of the whole call, inversion included.
    inversion_seconds : float
        Of which the inversion.
    inversion_error : float
        Mean pixel MSE of ``G_0(z_u, y_u)`` against the unlearning images.
    auc_trajectory : list of (int, float)
        ``(iteration, AUC)`` at every check (iteration 0: before unlearning).
    reached_destination : bool
        Whether the AUC target was reached before ``max_iterations``.
    shot : str
        ``"few"`` or ``"zero"``.
    """

    gan: ConditionalGan
    iterations: int
    seconds: float
    inversion_seconds: float
    inversion_error: float
    auc_trajectory: list[tuple[int, float]] = field(default_factory=list)
    reached_destination: bool = False
    shot: str = "few"

    @property
    def final_auc(self) -> float:
        """The last AUC measured (NaN when none was)."""
        return self.auc_trajectory[-1][1] if self.auc_trajectory else float("nan")


class GanUnlearnerSettings(BaseModel):
    """Base of every GAN unlearner's options (unknown options are errors)."""

    model_config = ConfigDict(extra="forbid")


class GanUnlearner(ABC):
    """Base class of every GAN-unlearning method.

    Subclasses set ``name``, ``summary``, a ``Settings`` model and implement :meth:`unlearn`.
    """

    name: ClassVar[str]
    summary: ClassVar[str] = ""
    Settings: ClassVar[type[BaseModel]] = GanUnlearnerSettings

    def __init__(self, **options: Any) -> None:
        self.settings = validated_options(self.name, self.Settings, options)

    def check(self, request: GanUnlearningRequest) -> None:  # noqa: B027
        """Raise ``ValueError`` when this unlearner cannot serve ``request`` (default: any)."""

    @abstractmethod
    def unlearn(
        self,
        gan: ConditionalGan,
        request: GanUnlearningRequest,
        *,
        device: torch.device | None = None,
        progress: ProgressFn | None = None,
    ) -> GanUnlearningResult:
        """Return the unlearned GAN (a copy) and its statistics."""


GAN_UNLEARNER_REGISTRY: Registry[type[GanUnlearner]] = Registry(
    "GAN unlearner", error=UnknownGanUnlearnerError
)
register_gan_unlearner = GAN_UNLEARNER_REGISTRY.register
"""Class decorator: register a GAN unlearner under its ``name``."""
gan_unlearner_names = GAN_UNLEARNER_REGISTRY.names


def build_gan_unlearner(name: str, **options: Any) -> GanUnlearner:
    """Instantiate a registered GAN unlearner; bad names and options are a one-line error."""
    return GAN_UNLEARNER_REGISTRY.lookup(name)(**options)
