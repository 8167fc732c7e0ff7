"""Skyeye's files: ``skyeye.json``, the grid of drawings and Fig. 11's before/after picture."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fedforget.data import ArrayDataset
from fedforget.verification.figures import image_grid, save_figure, show_image
from fedforget.verification.networks import ConditionalGenerator
from fedforget.verification.skyeye_config import (
    SKYEYE_COMPARISON_FILE,
    SKYEYE_GRID_FILE,
    SKYEYE_JSON_FILE,
)
from fedforget.verification.skyeye_training import generate

if TYPE_CHECKING:  # the result's write() calls this module: a runtime import would be a cycle
    from fedforget.verification.skyeye_judge import SkyeyeResult

# --------------------------------------------------------------------------------------
# Pictures and files
# --------------------------------------------------------------------------------------


def _figure(rows: int, cols: int, cell: float = 0.75) -> tuple[Any, Any]:
    """A grid of ``cell``-inch image cells with room for the row labels and the title."""
    return image_grid(rows, cols, figsize=(cell * cols + 0.9, cell * rows + 0.6))


def plot_grid(result: SkyeyeResult, path: Path | str, samples: int | None = None) -> Path:
    """Save the grid of drawings: one row per class, ``samples`` columns.

    Rows are labelled with the class and its recognition; a drawing the judge reads as another
    class gets a red frame.
    """
    count = min(samples or result.config.grid_samples, result.samples.shape[1])
    classes = result.samples.shape[0]
    fig, axes = _figure(classes, count)
    for c in range(classes):
        for k in range(count):
            ax = axes[c][k]
            show_image(ax, result.samples[c, k])
            if result.predictions[c, k] != c:
                for spine in ax.spines.values():
                    spine.set_color("red")
                    spine.set_linewidth(1.5)
        mark = " (forgotten)" if c in result.forgotten_classes else ""
        axes[c][0].set_ylabel(f"{c}: {result.recognition[c]:.0%}{mark}", fontsize=7)
    fig.suptitle(f"Skyeye: {result.verdict.replace('_', ' ')}", fontsize=9)
    return save_figure(fig, path, dpi=90)


def plot_before_after(
    before: ConditionalGenerator,
    after: ConditionalGenerator,
    real: ArrayDataset,
    classes: Sequence[int],
    path: Path | str,
    samples: int = 1,
    seed: int = 0,
) -> Path:
    """Fig. 11: per class, real image(s), the generator before unlearning, the one after.

    Parameters
    ----------
    before, after : ConditionalGenerator
        Generators trained with the model before and after unlearning (same shape, classes).
    real : ArrayDataset
        Real images with labels; the first ``samples`` of each class are shown (a blank cell
        when it holds none).
    classes : sequence of int
        The rows, typically the forgotten classes.
    path : Path or str
        Where to save the PNG.
    samples : int
        Images per panel (the paper shows one).
    seed : int
        Seed of the noise; both generators receive the same ``z``.
    """
    classes = [int(c) for c in classes]
    if not classes:
        raise ValueError("plot_before_after needs at least one class")
    fig, axes = _figure(len(classes), 3 * samples, cell=0.9)
    for row, c in enumerate(classes):
        labels = np.full(samples, c)
        panels = (
            real.x[np.flatnonzero(real.y == c)[:samples]],
            generate(before, labels, seed + c),
            generate(after, labels, seed + c),
        )
        for p, images in enumerate(panels):
            for k in range(samples):
                ax = axes[row][p * samples + k]
                if k < len(images):
                    show_image(ax, images[k])
                else:
                    ax.set_facecolor("lightgrey")
        axes[row][0].set_ylabel(f"class {c}", fontsize=8)
    for p, title in enumerate(("real", "before unlearning", "after unlearning")):
        axes[0][p * samples].set_title(title, fontsize=8, loc="left")
    return save_figure(fig, path, dpi=90)


def write_skyeye(
    result: SkyeyeResult,
    out_dir: Path | str,
    *,
    before: ConditionalGenerator | None = None,
    real: ArrayDataset | None = None,
) -> dict[str, Path]:
    """Write ``skyeye.json``, the grid PNG and, given ``before`` and ``real``, Fig. 11's PNG.

    Parameters
    ----------
    result : SkyeyeResult
        The verification to write.
    out_dir : Path or str
        Folder (created if needed).
    before : ConditionalGenerator, optional
        Generator trained with the model before unlearning, for the comparison.
    real : ArrayDataset, optional
        Real labelled images for the comparison's first column.

    Returns
    -------
    dict of str to Path
        ``{"json": ..., "grid": ..., "comparison": ...}`` for the files written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / SKYEYE_JSON_FILE}
    paths["json"].write_text(json.dumps(result.to_json(), indent=2) + "\n")
    paths["grid"] = plot_grid(result, out / SKYEYE_GRID_FILE)
    rows = result.forgotten_classes or (
        [result.trigger["target"]] if result.trigger is not None else []
    )
    if before is not None and real is not None and rows:
        paths["comparison"] = plot_before_after(
            before,
            result.generator,
            real,
            rows,
            out / SKYEYE_COMPARISON_FILE,
            seed=result.config.seed,
        )
    return paths
