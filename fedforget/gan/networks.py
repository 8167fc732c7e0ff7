"""The class-conditional GAN that fedforget federates: one module holding G(z, y) and D(x, y).

Used by the federated GAN task (``fedforget simulate --task gan``, paper 001's unlearning
target) and by MuGAN's per-class generators (paper 002, section 3.2), which the clients train
alongside the classifier.

Architecture (a light conditional DCGAN, for any ``(C, H, W)`` with ``H, W >= 4``):

* **G** is Skyeye's :class:`~fedforget.verification.networks.DcganGenerator`: the one-hot
  label next to 100-d Gaussian noise, FC + BatchNorm + ReLU to ``2 width`` channels at a
  quarter of the image size, two ConvTranspose 4x4 stride 2 (BatchNorm, ReLU; then Sigmoid),
  images in [0, 1].
* **D** is *conditional*, with the projection of Miyato and Koyama (ICLR 2018):
  ``D(x, y) = w . h(x) + e_y . h(x)`` with ``h`` two Conv 4x4 stride 2 (LeakyReLU 0.2) and
  a class embedding ``e_y``. Skyeye's D is unconditional because the verified classifier
  carries the class information there; in a GAN trained alone nothing else would, and G's
  drawings for a label would be any digit. D has no batch norm: each client's D sees one
  batch of real and one of fake images, and FedAvg would average batch statistics of
  different clients' real data into a mismatch.

``D`` returns the logit; ``sigmoid(logit)`` is the score in [0, 1] that paper 001's fake label
(Eq. 5) and AUC refer to.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fedforget.verification.networks import SLOPE, DcganGenerator

Z_DIM = 100
WIDTH = 32


class ProjectionDiscriminator(nn.Module):
    """Conditional discriminator ``D(x, y)`` with a projection head; returns logits ``(N,)``.

    Parameters
    ----------
    num_classes : int
        Number of classes.
    image_shape : tuple of int
        ``(C, H, W)`` of the images.
    width : int
        Channels of the first convolution (the second has ``2 width``).
    """

    def __init__(self, num_classes: int, image_shape: tuple[int, int, int], width: int = WIDTH):
        super().__init__()
        channels, height, wide = image_shape
        flat = 2 * width * (height // 4) * (wide // 4)
        self.features = nn.Sequential(
            nn.Conv2d(channels, width, 4, stride=2, padding=1),
            nn.LeakyReLU(SLOPE),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1),
            nn.LeakyReLU(SLOPE),
            nn.Flatten(),
        )
        self.head = nn.Linear(flat, 1)
        self.embed = nn.Embedding(num_classes, flat)
        nn.init.normal_(self.embed.weight, std=0.02)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Logits of ``D(x, y)`` for images ``(N, C, H, W)`` and labels ``(N,)``."""
        h = self.features(x)
        return self.head(h).squeeze(1) + (self.embed(y) * h).sum(dim=1)


class ConditionalGan(nn.Module):
    """A generator and a discriminator in one module (one state dict for FedAvg).

    Parameters
    ----------
    num_classes : int
        Number of classes the GAN is conditioned on (at least 2).
    image_shape : tuple of int
        ``(C, H, W)`` of the real images.
    z_dim : int
        Noise dimension.
    width : int
        Base channel count of both networks.

    Attributes
    ----------
    generator : DcganGenerator
        ``G(z, y)`` -> images in [0, 1].
    discriminator : ProjectionDiscriminator
        ``D(x, y)`` -> logits.
    """

    def __init__(
        self,
        num_classes: int,
        image_shape: tuple[int, int, int],
        z_dim: int = Z_DIM,
        width: int = WIDTH,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2; got {num_classes}")
        shape = tuple(int(s) for s in image_shape)
        self.num_classes = num_classes
        self.image_shape: tuple[int, int, int] = shape  # type: ignore[assignment]
        self.z_dim = z_dim
        self.generator = DcganGenerator(num_classes, self.image_shape, z_dim, width)
        self.discriminator = ProjectionDiscriminator(num_classes, self.image_shape, width)

    def forward(self, z: Tensor, y: Tensor) -> Tensor:
        """``G(z, y)``."""
        return self.generator(z, y)

    def score(self, x: Tensor, y: Tensor) -> Tensor:
        """``D(x, y)`` as a probability in [0, 1] (the sigmoid of the logit)."""
        return torch.sigmoid(self.discriminator(x, y))


def build_conditional_gan(
    num_classes: int, image_shape: tuple[int, ...], seed: int = 0, width: int = WIDTH
) -> ConditionalGan:
    """A freshly initialised :class:`ConditionalGan`, seeded (the same weights on every node)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return ConditionalGan(num_classes, tuple(image_shape), width=width)  # type: ignore[arg-type]
