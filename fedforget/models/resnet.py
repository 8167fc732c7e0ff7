"""CIFAR-style residual networks (He et al., 2016, section 4.2).

A 3x3 convolution with 16 filters is followed by three stages of ``n`` basic blocks with
16, 32 and 64 filters (the first block of stages 2 and 3 downsamples with stride 2), global
average pooling and a linear head: ``6n + 2`` weighted layers in all. Shortcuts use option A
(parameter-free identity, zero-padded in the channel dimension when the width grows).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fedforget.models.base import ClassifierModel, register_model

__all__ = ["BasicBlock", "CifarResNet", "resnet20", "resnet32", "resnet56"]

_STAGE_WIDTHS = (16, 32, 64)


class _PadShortcut(nn.Module):
    """Option-A shortcut: subsample spatially, then zero-pad the new channels."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        extra = out_channels - in_channels
        self.pad_front = extra // 2
        self.pad_back = extra - self.pad_front

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        # F.pad pads the last dimensions first: (W, W, H, H, C, C).
        return F.pad(x, (0, 0, 0, 0, self.pad_front, self.pad_back))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a residual connection.

    Parameters
    ----------
    in_channels : int
        Input channels.
    out_channels : int
        Output channels (not fewer than ``in_channels``).
    stride : int
        Stride of the first convolution.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = _PadShortcut(in_channels, out_channels, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


def _stage(in_channels: int, out_channels: int, blocks: int, stride: int) -> nn.Sequential:
    layers = [BasicBlock(in_channels, out_channels, stride)]
    layers += [BasicBlock(out_channels, out_channels) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class CifarResNet(ClassifierModel):
    """ResNet of depth ``6 * blocks_per_stage + 2`` for small images.

    Parameters
    ----------
    blocks_per_stage : int
        ``n``, the number of basic blocks in each of the three stages.
    num_classes : int
        Number of output classes.
    in_channels : int
        Number of input channels.

    Notes
    -----
    Global average pooling makes the network independent of the input size; stages 2 and 3
    halve the resolution, so images of at least 8x8 keep a spatial extent of 2x2 or more.
    """

    feature_layers = ("layer1", "layer2", "layer3")

    def __init__(self, blocks_per_stage: int, num_classes: int, in_channels: int) -> None:
        super().__init__()
        if blocks_per_stage < 1:
            raise ValueError(f"blocks_per_stage must be positive, got {blocks_per_stage}")
        self.num_classes = num_classes
        w1, w2, w3 = _STAGE_WIDTHS
        self.conv1 = nn.Conv2d(in_channels, w1, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w1)
        self.layer1 = _stage(w1, w1, blocks_per_stage, stride=1)
        self.layer2 = _stage(w1, w2, blocks_per_stage, stride=2)
        self.layer3 = _stage(w2, w3, blocks_per_stage, stride=2)
        self.head = nn.Linear(w3, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.Linear):
                nn.init.kaiming_normal_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def _encode(self, x: Tensor, features: dict[str, Tensor] | None) -> Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self._record(features, "layer1", self.layer1(x))
        x = self._record(features, "layer2", self.layer2(x))
        x = self._record(features, "layer3", self.layer3(x))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


def _check_image_size(image_size: int) -> None:
    if image_size < 8:
        raise ValueError(f"image_size must be at least 8 for a CIFAR ResNet, got {image_size}")


@register_model("resnet20")
def resnet20(num_classes: int, in_channels: int, image_size: int) -> CifarResNet:
    """ResNet-20 (``n = 3``, about 0.27M parameters with 10 classes)."""
    _check_image_size(image_size)
    return CifarResNet(3, num_classes, in_channels)


@register_model("resnet32")
def resnet32(num_classes: int, in_channels: int, image_size: int) -> CifarResNet:
    """ResNet-32 (``n = 5``, about 0.46M parameters with 10 classes)."""
    _check_image_size(image_size)
    return CifarResNet(5, num_classes, in_channels)


@register_model("resnet56")
def resnet56(num_classes: int, in_channels: int, image_size: int) -> CifarResNet:
    """ResNet-56 (``n = 9``, about 0.85M parameters with 10 classes)."""
    _check_image_size(image_size)
    return CifarResNet(9, num_classes, in_channels)
