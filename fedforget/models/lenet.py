"""Small convolutional networks: LeNet-5 for digits and a one-conv net for AT&T faces."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fedforget.models.base import ClassifierModel, register_model

__all__ = ["AttLeNet", "LeNet5"]


def _flat_dim(encoder: nn.Module, in_channels: int, image_size: int) -> int:
    """Return the flattened output size of ``encoder`` for one square image."""
    with torch.no_grad():
        out = encoder(torch.zeros(1, in_channels, image_size, image_size))
    if out.numel() == 0:
        raise ValueError(f"image_size {image_size} is too small for this model")
    return out.numel()


def _check_image_size(image_size: int, minimum: int) -> None:
    if image_size < minimum:
        raise ValueError(f"image_size must be at least {minimum}, got {image_size}")


@register_model("lenet5")
class LeNet5(ClassifierModel):
    """LeNet-5: two conv + max-pool stages and three fully connected layers.

    For 28x28 inputs the flattened size is ``16 * 5 * 5 = 400``. When the first pooled map is
    too small for an unpadded 5x5 convolution (e.g. 8x8 digits), ``conv2`` is padded so the
    spatial size never reaches zero.

    Parameters
    ----------
    num_classes : int
        Number of output classes.
    in_channels : int
        Number of input channels.
    image_size : int
        Input height and width; at least 4.
    """

    feature_layers = ("conv1", "conv2")

    def __init__(self, num_classes: int, in_channels: int, image_size: int) -> None:
        super().__init__()
        _check_image_size(image_size, 4)
        self.num_classes = num_classes
        pooled = image_size // 2
        # An unpadded 5x5 conv needs at least 6 pixels to leave something to pool.
        conv2_padding = 0 if pooled >= 6 else 2
        self.conv1 = nn.Conv2d(in_channels, 6, kernel_size=5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, kernel_size=5, padding=conv2_padding)
        self.pool = nn.MaxPool2d(2)
        flat = _flat_dim(self._conv_stack, in_channels, image_size)
        self.fc1 = nn.Linear(flat, 120)
        self.fc2 = nn.Linear(120, 84)
        self.head = nn.Linear(84, num_classes)

    def _conv_stack(self, x: Tensor, features: dict[str, Tensor] | None = None) -> Tensor:
        x = self._record(features, "conv1", torch.relu(self.conv1(x)))
        x = self._record(features, "conv2", torch.relu(self.conv2(self.pool(x))))
        return self.pool(x)

    def _encode(self, x: Tensor, features: dict[str, Tensor] | None) -> Tensor:
        x = torch.flatten(self._conv_stack(x, features), 1)
        return torch.relu(self.fc2(torch.relu(self.fc1(x))))


@register_model("lenet-att")
class AttLeNet(ClassifierModel):
    """One conv layer, one 4x4 max-pool and two fully connected layers (AT&T faces model).

    For 64x64 inputs the flattened size is ``32 * 16 * 16 = 8192``.

    Parameters
    ----------
    num_classes : int
        Number of output classes.
    in_channels : int
        Number of input channels.
    image_size : int
        Input height and width; at least 4.
    """

    feature_layers = ("conv1",)

    def __init__(self, num_classes: int, in_channels: int, image_size: int) -> None:
        super().__init__()
        _check_image_size(image_size, 4)
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(in_channels, 32, kernel_size=5, padding=2)
        self.pool = nn.MaxPool2d(4)
        flat = _flat_dim(self._conv_stack, in_channels, image_size)
        self.fc1 = nn.Linear(flat, 256)
        self.head = nn.Linear(256, num_classes)

    def _conv_stack(self, x: Tensor, features: dict[str, Tensor] | None = None) -> Tensor:
        x = self._record(features, "conv1", torch.relu(self.conv1(x)))
        return self.pool(x)

    def _encode(self, x: Tensor, features: dict[str, Tensor] | None) -> Tensor:
        x = torch.flatten(self._conv_stack(x, features), 1)
        return torch.relu(self.fc1(x))
