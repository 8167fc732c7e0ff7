"""The verifiers' pictures: grids of images drawn with Matplotlib's object API.

Figures are made on an Agg canvas without pyplot, so that writing a picture neither needs a
display nor changes a global backend (verifiers run inside clients and tests).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fedforget.verification.base import as_image

__all__ = ["image_grid", "save_figure", "show_image"]


def image_grid(rows: int, cols: int, figsize: tuple[float, float]) -> tuple[Any, Any]:
    """An Agg figure of ``figsize`` inches with a ``rows`` x ``cols`` grid of bare axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig, axes


def show_image(ax: Any, image: np.ndarray) -> None:
    """Draw a (C, H, W) image in [0, 1] on ``ax``, grey levels fixed to [0, 1]."""
    ax.imshow(as_image(image), cmap="gray", vmin=0.0, vmax=1.0)


def save_figure(fig: Any, path: Path | str, dpi: int) -> Path:
    """Lay ``fig`` out tightly and save it to ``path``."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    return Path(path)
