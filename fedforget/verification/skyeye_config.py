"""Skyeye's settings, thresholds and file names (see :mod:`fedforget.verification.skyeye`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from fedforget.verification.networks import Architecture

SKYEYE_JSON_FILE = "skyeye.json"
SKYEYE_GRID_FILE = "skyeye_grid.png"
SKYEYE_COMPARISON_FILE = "skyeye_before_after.png"
FORGOTTEN = "forgotten"
NOT_FORGOTTEN = "not_forgotten"
Verdict = Literal["forgotten", "not_forgotten"]
DEFAULT_JUDGE = "a judge classifier supplied by the caller"
GENERATE_BATCH = 1000
BRIGHT = 0.5  # a trigger region brighter than this on average counts as carrying the trigger


class SkyeyeThresholds(BaseModel):
    """Thresholds of the verdict (defaults justified in :mod:`fedforget.verification.skyeye`).

    Attributes
    ----------
    forgotten_max : float
        Largest recognition a forgotten class may keep.
    retained_min_mean : float
        Smallest mean recognition of the retained classes.
    retained_min : float
        Smallest recognition of any retained class.
    trigger_max_difference : float
        Largest trigger-region intensity difference (target minus other classes) allowed.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    forgotten_max: float = Field(0.20, ge=0.0, le=1.0)
    retained_min_mean: float = Field(0.85, ge=0.0, le=1.0)
    retained_min: float = Field(0.50, ge=0.0, le=1.0)
    trigger_max_difference: float = Field(0.20, ge=0.0, le=1.0)


class SkyeyeConfig(BaseModel):
    """Settings of the Skyeye verification (defaults: see :mod:`fedforget.verification.skyeye`).

    Attributes
    ----------
    architecture : {"dcgan", "paper"}
        Networks: the light conditional DCGAN (default) or Appendix C's.
    mu_d, mu_c : float
        Weights of the discriminator and classifier terms of l_G (Eq. 10).
    mu_f, mu_r : float
        Weights of the fake and real terms of l_D (Eq. 11).
    lr : float
        Adam learning rate of G and D.
    betas : tuple of float
        Adam betas.
    batch_size : int
        Real (and fake) images per step.
    steps : int
        Training steps (one D step and ``generator_steps`` G steps each).
    max_seconds : float or None
        Stop training after this many seconds, even before ``steps``.
    generator_steps : int
        G steps after each D step (Algorithm 2's ``j``).
    z_dim : int
        Noise dimension.
    width : int
        Base channel count of the DCGAN networks.
    samples_per_class : int
        Drawings per class scored by the judge (N).
    grid_samples : int
        Drawings per class shown in the grid PNG.
    thresholds : SkyeyeThresholds
        Thresholds of the verdict.
    log_every : int
        Steps between progress reports.
    seed : int
        Seed of the initialisation, the batch order, the noise and the labels.
    device : str
        ``auto`` (GPU when present), ``cpu``, ``cuda``, ...
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    architecture: Architecture = "dcgan"
    mu_d: float = Field(0.5, ge=0.0)
    mu_c: float = Field(0.5, ge=0.0)
    mu_f: float = Field(0.5, ge=0.0)
    mu_r: float = Field(0.5, ge=0.0)
    lr: float = Field(3e-4, gt=0.0)
    betas: tuple[float, float] = (0.5, 0.999)
    batch_size: int = Field(100, ge=2)
    steps: int = Field(2000, ge=1)
    max_seconds: float | None = Field(None, gt=0.0)
    generator_steps: int = Field(1, ge=1)
    z_dim: int = Field(100, ge=1)
    width: int = Field(32, ge=1)
    samples_per_class: int = Field(100, ge=1)
    grid_samples: int = Field(10, ge=1)
    thresholds: SkyeyeThresholds = Field(default_factory=SkyeyeThresholds)
    log_every: int = Field(100, ge=1)
    seed: int = 0
    device: str = "auto"
