"""The unlearner extension point: one interface, one registry.

An unlearner turns the current global model into one that has forgotten a request's data.
It declares which data it needs (:attr:`Unlearner.needs`), and the Flower strategy gathers
exactly that from the clients as messages; the core never reaches into a client.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np
import torch

from fedforget.data.sources import ArrayDataset
from fedforget.models import ClassifierModel

DataNeed = Literal["forget", "retain", "history"]
ProgressFn = Callable[[str, int, int, dict[str, float]], None]


class UnknownUnlearnerError(ValueError):
    """An unlearner name that is not registered."""


@dataclass(frozen=True)
class UnlearningRequest:
    """What is to be forgotten and the data the unlearner was given.

    Attributes
    ----------
    forget : ArrayDataset
        D_f as gathered from the deleting clients (triggered and relabelled in backdoor mode).
    num_classes : int
        Number of output classes.
    mode : str
        Deletion mode: ``backdoor``, ``random``, ``class`` or ``client``.
    forget_classes : tuple[int, ...]
        Forgotten classes in class mode.
    retain : ArrayDataset | None
        A retained subset, for methods that declare the ``retain`` need.
    """

    forget: ArrayDataset
    num_classes: int
    mode: str = "backdoor"
    forget_classes: tuple[int, ...] = ()
    retain: ArrayDataset | None = None


@dataclass
class UnlearningContext:
    """Everything besides the data: initial weights, device, seed and a progress callback.

    Attributes
    ----------
    initial_state : dict[str, np.ndarray]
        The weights the federation started from (w_0), e.g. paper 000's incompetent teacher.
    build_model : Callable[[], ClassifierModel]
        Makes a fresh model of the federation's architecture.
    device : torch.device
        Where to compute.
    seed : int
        Seed for batch order and any randomness.
    progress : ProgressFn | None
        Called as ``progress(phase, step, total, metrics)``.
    """

    initial_state: dict[str, np.ndarray]
    build_model: Callable[[], ClassifierModel]
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0
    progress: ProgressFn | None = None

    def report(self, phase: str, step: int, total: int, **metrics: float) -> None:
        """Forward a progress event when a callback is set."""
        if self.progress is not None:
            self.progress(phase, step, total, metrics)


class Unlearner(ABC):
    """Base class of every unlearning method."""

    name: ClassVar[str]
    needs: ClassVar[frozenset[DataNeed]] = frozenset({"forget"})

    @abstractmethod
    def unlearn(
        self, model: ClassifierModel, request: UnlearningRequest, context: UnlearningContext
    ) -> ClassifierModel:
        """Return the unlearned model (may modify ``model`` in place)."""


UNLEARNER_REGISTRY: dict[str, type[Unlearner]] = {}


def register_unlearner(cls: type[Unlearner]) -> type[Unlearner]:
    """Class decorator: register an unlearner under its ``name``."""
    UNLEARNER_REGISTRY[cls.name] = cls
    return cls


def unlearner_names() -> list[str]:
    """Registered unlearner names, sorted."""
    return sorted(UNLEARNER_REGISTRY)


def build_unlearner(name: str, **options: object) -> Unlearner:
    """Instantiate a registered unlearner."""
    if name not in UNLEARNER_REGISTRY:
        raise UnknownUnlearnerError(
            f"unknown unlearner '{name}'; choose one of: {', '.join(unlearner_names())}"
        )
    return UNLEARNER_REGISTRY[name](**options)
