"""The verifier extension point: one interface, a name -> class registry.

A verifier answers a deleting user's question "did the model forget what I asked to delete?"
on the user's own machine, from what the user holds (:class:`VerificationTask`): the model
under verification, the model from before the unlearning, the user's own data and the samples
they asked to delete. ``fedforget verify <name>`` runs one standalone; in a simulation,
``--verify <name>`` makes the deleting clients run it after they receive the final model.
Nothing here imports Flower.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from fedforget.config import ConfigError, SimulationConfig, validated_options
from fedforget.data import ArrayDataset, Federation
from fedforget.data.modes import DeletionMode, Kind, deletion_mode
from fedforget.registry import Registry

__all__ = [
    "VERIFIER_REGISTRY",
    "VerificationResult",
    "VerificationTask",
    "Verifier",
    "VerifierSettings",
    "as_image",
    "build_verifier",
    "client_task",
    "frozen_copy",
    "register_verifier",
    "verifier_names",
]

ProgressFn = Callable[[str, int, int, dict[str, float]], None]
"""Called as ``progress(phase, step, total, metrics)``."""


@dataclass(frozen=True)
class VerificationTask:
    """What a deleting user holds when they verify.

    Attributes
    ----------
    model : nn.Module
        The model under verification (after unlearning); verifiers leave it unchanged.
    reference : nn.Module
        The model from before the unlearning (Skyeye's judge, SPD's source model ``M``).
    reference_name : str
        Where ``reference`` comes from, for the reports.
    num_classes : int
        Number of classes of both models.
    local_data : ArrayDataset
        The user's own images (for a backdoor deletion, including the triggered ones).
    forget : ArrayDataset or None
        The samples the user asked to delete, with their (training) labels.
    forgotten_classes : tuple of int
        Classes deleted (class deletion); empty otherwise.
    backdoor_target, trigger_size : int or None
        The backdoor's target class and trigger side (backdoor deletion); ``None`` otherwise.
    """

    model: nn.Module
    reference: nn.Module
    reference_name: str
    num_classes: int
    local_data: ArrayDataset
    forget: ArrayDataset | None = None
    forgotten_classes: tuple[int, ...] = ()
    backdoor_target: int | None = None
    trigger_size: int | None = None


class VerificationResult(Protocol):
    """What a verifier returns: a JSON object and the files it writes."""

    def to_json(self) -> dict[str, Any]:
        """The report (``<name>.json``); always holds ``seconds``."""

    def write(self, out_dir: Path) -> dict[str, Path]:
        """Write the JSON report and the pictures into ``out_dir``; return their paths."""


class VerifierSettings(BaseModel):
    """Base of every verifier's options (unknown options are errors)."""

    model_config = ConfigDict(extra="forbid")


class Verifier(ABC):
    """Base class of every verification method.

    Subclasses set ``name``, ``summary``, a ``Settings`` model and implement :meth:`check` and
    :meth:`verify`. ``Settings`` receives the user's options plus ``seed`` and ``device``.
    ``kinds`` are the kinds of deletion (:class:`~fedforget.data.modes.Kind`) it can check.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    Settings: ClassVar[type[BaseModel]] = VerifierSettings
    kinds: ClassVar[frozenset[Kind]] = frozenset(Kind)

    def __init__(self, **options: Any) -> None:
        self.settings = validated_options(self.name, self.Settings, options)

    @classmethod
    def check_mode(cls, mode: str | DeletionMode) -> None:
        """Refuse, with a one-line :class:`ConfigError`, a deletion it cannot check."""
        mode = deletion_mode(mode)
        if not mode.node_side and mode.kind not in cls.kinds:
            checked = " and ".join(sorted(cls.kinds))
            raise ConfigError(f"--verify {cls.name} checks {checked} deletions, not {mode.name}")

    @abstractmethod
    def check(self, task: VerificationTask) -> None:
        """Raise :class:`ValueError` (one line) when ``task`` lacks what this verifier needs."""

    @abstractmethod
    def verify(
        self, task: VerificationTask, progress: ProgressFn | None = None
    ) -> VerificationResult:
        """Run the verification (call :meth:`check` first)."""


VERIFIER_REGISTRY: Registry[type[Verifier]] = Registry("verifier")
register_verifier = VERIFIER_REGISTRY.register
"""Class decorator: register a verifier under its ``name``."""
verifier_names = VERIFIER_REGISTRY.names


def build_verifier(name: str, **options: Any) -> Verifier:
    """Instantiate a registered verifier; unknown names and options are :class:`ConfigError`."""
    return VERIFIER_REGISTRY.lookup(name)(**options)


def client_task(
    federation: Federation,
    config: SimulationConfig,
    partition_id: int,
    model: nn.Module,
    reference: nn.Module,
    reference_name: str,
) -> VerificationTask:
    """What deleting client ``partition_id`` verifies with, after its deletion.

    Its own images are its retained local data; after a backdoor deletion they include the
    triggered samples it asked to delete (so Skyeye's discriminator accepts the trigger as
    realistic). ``forget`` is the user's own copy of the samples they asked to delete: they
    left the training data, not the user's disk, and they never leave the node here.
    """
    deletion = config.deletion
    mode = deletion_mode(deletion.mode)
    backdoor = federation.plan.backdoor_target is not None
    local, _ = federation.client_data(partition_id, drop_deleted=not backdoor)
    return VerificationTask(
        model=model,
        reference=reference,
        reference_name=reference_name,
        num_classes=federation.num_classes,
        local_data=local,
        forget=federation.train.subset(federation.client_forget_indices(partition_id)),
        forgotten_classes=tuple(deletion.forget_classes) if mode.names_classes else (),
        backdoor_target=deletion.backdoor_target if backdoor else None,
        trigger_size=deletion.trigger_size if backdoor else None,
    )


def frozen_copy(model: nn.Module, device: torch.device) -> nn.Module:
    """A deep copy of ``model`` on ``device``, in eval mode, without gradients.

    Verifiers read the caller's models through such copies and leave the models as they were.
    """
    clone = copy.deepcopy(model).to(device).eval()
    clone.requires_grad_(False)
    return clone


def as_image(image: np.ndarray) -> np.ndarray:
    """(C, H, W) in [0, 1] to what ``imshow`` takes: (H, W) or (H, W, 3), clipped."""
    picture = np.clip(image, 0.0, 1.0)
    return np.moveaxis(picture, 0, -1) if picture.shape[0] == 3 else picture[0]
