"""Common interface and name registry for the classifiers used in the experiments.

Every model exposes three views of one forward pass:

* ``forward(x)`` -- the logits, shape ``(N, num_classes)``;
* ``embed(x)`` -- the penultimate latent vector ``(N, D)``, so that
  ``model.head(model.embed(x))`` equals ``model(x)``;
* ``forward_features(x)`` -- the logits together with the intermediate feature maps named in
  ``feature_layers`` (used for attention maps ``A(F) = sum_c |F_c|^2``), all from one pass.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar, TypeVar

import torch
from torch import Tensor, nn

from fedforget.registry import Registry, UnknownNameError

__all__ = [
    "MODEL_REGISTRY",
    "ClassifierModel",
    "ModelFactory",
    "UnknownModelError",
    "build_model",
    "classifier_head",
    "load_model",
    "logits_and_features",
    "missing_parts",
    "model_names",
    "read_weights",
    "register_model",
    "weights_fit",
]


class ClassifierModel(nn.Module, ABC):
    """Abstract image classifier split into an encoder and a linear ``head``.

    Subclasses build ``self.head`` (mapping the embedding to logits), list the names of the
    intermediate feature maps in ``feature_layers`` and implement :meth:`_encode`.

    Attributes
    ----------
    feature_layers : tuple of str
        Names of the intermediate layers whose outputs ``(N, C, H, W)`` are returned by
        :meth:`forward_features`, in forward order.
    head : torch.nn.Module
        Final layer; ``head(embed(x)) == forward(x)``.
    num_classes : int
        Number of output classes.
    """

    feature_layers: ClassVar[tuple[str, ...]] = ()
    head: nn.Module
    num_classes: int

    @abstractmethod
    def _encode(self, x: Tensor, features: dict[str, Tensor] | None) -> Tensor:
        """Map a batch of images to the embedding, recording feature maps on the way.

        Parameters
        ----------
        x : Tensor
            Images, shape ``(N, C, H, W)``.
        features : dict or None
            When not ``None``, every layer named in ``feature_layers`` stores its output here.

        Returns
        -------
        Tensor
            Embedding, shape ``(N, D)``.
        """

    def embed(self, x: Tensor) -> Tensor:
        """Return the penultimate latent vector, shape ``(N, D)``, the input of ``head``."""
        return self._encode(x, None)

    def forward(self, x: Tensor) -> Tensor:
        """Return the logits, shape ``(N, num_classes)``."""
        return self.head(self._encode(x, None))

    def forward_features(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Return the logits and the feature maps of ``feature_layers`` from one forward pass.

        Parameters
        ----------
        x : Tensor
            Images, shape ``(N, C, H, W)``.

        Returns
        -------
        logits : Tensor
            Shape ``(N, num_classes)``.
        features : dict of str to Tensor
            One ``(N, C, H, W)`` map per name in ``feature_layers``, in that order. The maps
            are part of the autograd graph of ``logits``.
        """
        captured: dict[str, Tensor] = {}
        logits = self.head(self._encode(x, captured))
        return logits, {name: captured[name] for name in self.feature_layers}

    @staticmethod
    def _record(features: dict[str, Tensor] | None, name: str, value: Tensor) -> Tensor:
        """Store ``value`` under ``name`` when features are requested; return it unchanged."""
        if features is not None:
            features[name] = value
        return value


MODEL_PARTS = {
    "head": "a final layer `head` (head(embed(x)) == model(x))",
    "embed": "`embed(x)`, the input of `head`",
    "forward_features": "`forward_features(x)` with the feature maps of `feature_layers`",
}
"""What some methods need beyond ``model(x) -> logits`` (docs/models.md)."""


def missing_parts(model: nn.Module, needed: frozenset[str]) -> list[str]:
    """The parts of :data:`MODEL_PARTS` in ``needed`` that ``model`` lacks, sorted."""
    return sorted(part for part in needed if not hasattr(model, part))


def logits_and_features(model: nn.Module, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """``model.forward_features(x)``, or the logits and no feature maps for a plain module.

    Attention terms then have no maps to compare and drop out; the rest of a method runs.
    """
    if hasattr(model, "forward_features"):
        return model.forward_features(x)
    return model(x), {}


def classifier_head(model: nn.Module) -> nn.Module:
    """``model.head``, or for a plain module its last linear layer (the one giving logits)."""
    head = getattr(model, "head", None)
    if isinstance(head, nn.Module):
        return head
    linear = [module for module in model.modules() if isinstance(module, nn.Linear)]
    if not linear:
        raise ValueError(f"{type(model).__name__} has no `head` and no linear layer")
    return linear[-1]


ModelFactory = Callable[[int, int, int], ClassifierModel]
"""A model constructor ``(num_classes, in_channels, image_size) -> ClassifierModel``."""

_F = TypeVar("_F", bound=Callable[..., ClassifierModel])


class UnknownModelError(UnknownNameError):
    """Raised by :func:`build_model` for a name that is not registered.

    It is both a ``KeyError`` (a failed registry look-up) and a ``ValueError`` (a bad
    configuration value), so callers may catch either.
    """


MODEL_REGISTRY: Registry[Callable[..., ClassifierModel]] = Registry(
    "model", error=UnknownModelError
)


def register_model(name: str) -> Callable[[_F], _F]:
    """Register a model constructor under ``name``.

    Parameters
    ----------
    name : str
        Registry key, e.g. ``"resnet32"``.

    Returns
    -------
    Callable
        Decorator that registers a class or factory with signature
        ``(num_classes: int, in_channels: int, image_size: int)`` and returns it unchanged.

    Raises
    ------
    ValueError
        If ``name`` is empty or already registered.
    """
    if not name:
        raise ValueError("model name must be a non-empty string")

    def decorator(factory: _F) -> _F:
        return MODEL_REGISTRY.add(name, factory)

    return decorator


model_names = MODEL_REGISTRY.names


def build_model(name: str, num_classes: int, in_channels: int, image_size: int) -> ClassifierModel:
    """Build a registered model.

    Parameters
    ----------
    name : str
        Registered model name (see :func:`model_names`).
    num_classes : int
        Number of output classes.
    in_channels : int
        Number of input image channels.
    image_size : int
        Height and width of the (square) input images.

    Returns
    -------
    ClassifierModel
        A freshly initialised model.

    Raises
    ------
    UnknownModelError
        If ``name`` is not registered.
    ValueError
        If a size argument is not positive.
    """
    factory = MODEL_REGISTRY.lookup(name)
    for arg, value in (
        ("num_classes", num_classes),
        ("in_channels", in_channels),
        ("image_size", image_size),
    ):
        if value < 1:
            raise ValueError(f"{arg} must be positive, got {value}")
    return factory(num_classes, in_channels, image_size)


def read_weights(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """The ``state_dict`` saved at ``path``, read with ``torch.load(..., weights_only=True)``.

    ``weights_only``: a saved model cannot run code when it is read.

    Raises
    ------
    ValueError
        With one line when the file is missing or is not a state dict.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such model file") from None
    except Exception:  # a corrupt or foreign file (or a pickle that would run code)
        raise ValueError(f"{path}: not a torch weights file (a saved state_dict)") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state_dict, found {type(state).__name__}")
    return state


def weights_fit(
    state: dict[str, Tensor], name: str, num_classes: int, in_channels: int, image_size: int
) -> bool:
    """Whether ``state`` holds the weights of model ``name`` built for these images and classes.

    Compares names and shapes with a freshly built model, without loading anything into it,
    so that weights can be matched against several datasets' shapes cheaply (which dataset
    a model was trained on, when the user did not say).
    """
    try:
        expected = build_model(name, num_classes, in_channels, image_size).state_dict()
    except (ValueError, RuntimeError):  # a model that cannot take images this small
        return False
    return set(expected) == set(state) and all(
        isinstance(state[key], Tensor) and state[key].shape == value.shape
        for key, value in expected.items()
    )


def load_model(
    path: str | os.PathLike[str], name: str, num_classes: int, in_channels: int, image_size: int
) -> ClassifierModel:
    """A registered model holding the weights saved at ``path`` (a ``state_dict``).

    The file is read with :func:`read_weights`: a saved model cannot run code.

    Raises
    ------
    ValueError
        With one line when the file is missing, is not a state dict, or does not fit the model.
    """
    model = build_model(name, num_classes, in_channels, image_size)
    state = read_weights(path)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(
            f"{path}: does not hold {name} weights for {in_channels}x{image_size}x{image_size} "
            f"images and {num_classes} classes ({_first_line(err)})"
        ) from None
    return model.eval()


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[1] if len(lines) > 1 and lines[0].endswith(":") else (lines[0] if lines else "")
