"""Small matplotlib helpers for experiment figures (headless: the Agg backend is selected on import).

Each helper saves one PNG (creating parent folders), closes its figure and returns the path.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from frugalvision.errors import ConfigError, DataError  # noqa: E402

__all__ = ["bar_plot", "image_grid", "line_plot"]

_DPI = 110


def _save(fig: Any, path: str | os.PathLike[str]) -> Path:
    out = Path(path)
    if out.suffix.lower() != ".png":
        plt.close(fig)
        raise ConfigError(f"figure path {out} must end in .png")
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.tight_layout()
        fig.savefig(out, dpi=_DPI)
    finally:
        plt.close(fig)
    return out


def line_plot(
    path: str | os.PathLike[str],
    x: Sequence[float],
    series: Mapping[str, tuple[Sequence[float], Sequence[float] | None] | Sequence[float]],
    xlabel: str,
    ylabel: str,
    title: str,
) -> Path:
    """Plot one line per series, with a shaded ``mean ± std`` band.

    Args:
        path: Output PNG path.
        x: Shared x values.
        series: Label -> ``(means, stds)`` (``stds`` may be None), or label -> means.
        xlabel: X-axis label.
        ylabel: Y-axis label.
        title: Figure title.

    Returns:
        The PNG path.

    """
    xs = np.asarray(x, dtype=float)
    fig, ax = plt.subplots(figsize=(5.0, 3.4))
    for label, values in series.items():
        if isinstance(values, tuple) and len(values) == 2:
            mean_raw, std_raw = values
        else:
            mean_raw, std_raw = values, None
        mean = np.asarray(mean_raw, dtype=float)
        if mean.shape != xs.shape:
            plt.close(fig)
            raise DataError(f"series {label!r} has {mean.size} means for {xs.size} x values; pass one per x")
        (line,) = ax.plot(xs, mean, marker="o", markersize=3, label=str(label))
        if std_raw is not None:
            std = np.asarray(std_raw, dtype=float)
            if std.shape != xs.shape:
                plt.close(fig)
                raise DataError(f"series {label!r} has {std.size} stds for {xs.size} x values; pass one per x")
            ax.fill_between(xs, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize="small")
    return _save(fig, path)


def bar_plot(
    path: str | os.PathLike[str], summary: Mapping[str, Mapping[str, Mapping[str, float]]], metric: str, title: str
) -> Path:
    """Bar chart of one metric's mean per row name, with ``± std`` error bars.

    Args:
        path: Output PNG path.
        summary: A results ``summary`` (``{metric: {row name: {"mean", "std"}}}``).
        metric: Metric to plot.
        title: Figure title.

    Returns:
        The PNG path.

    """
    if metric not in summary:
        raise ConfigError(f"metric {metric!r} is not in the summary (has {sorted(summary)}); pick one of those")
    names = list(summary[metric])
    means = [summary[metric][n]["mean"] for n in names]
    stds = [summary[metric][n].get("std", 0.0) for n in names]
    fig, ax = plt.subplots(figsize=(max(3.0, 0.9 * len(names) + 1.5), 3.4))
    pos = np.arange(len(names))
    ax.bar(pos, means, yerr=stds, capsize=4, color="tab:blue", alpha=0.85)
    ax.set_xticks(pos, names, rotation=20 if len(names) > 4 else 0, ha="right" if len(names) > 4 else "center")
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def _to_image(img: Any, index: int) -> np.ndarray:
    if hasattr(img, "detach"):  # torch tensor, CHW -> HWC
        img = img.detach().cpu().numpy()
        if img.ndim == 3 and img.shape[0] in (1, 3, 4) and img.shape[-1] not in (1, 3, 4):
            img = np.moveaxis(img, 0, -1)
    arr = np.asarray(img)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise DataError(f"images[{index}] has shape {arr.shape}; pass HxW, HxWx3 or HxWx4 arrays (or CxHxW tensors)")
    if arr.dtype == np.bool_:
        arr = arr.astype(float)
    if np.issubdtype(arr.dtype, np.floating) and arr.ndim == 3:
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        if lo < 0.0 or hi > 1.0:  # colour images must lie in [0, 1]: rescale
            arr = (arr - lo) / (hi - lo if hi > lo else 1.0)
    return arr


def image_grid(
    path: str | os.PathLike[str],
    images: Sequence[Any],
    titles: Sequence[str] | None = None,
    ncols: int = 4,
) -> Path:
    """Show images in a grid (grayscale for 2-D arrays).

    Args:
        path: Output PNG path.
        images: Arrays ``HxW`` / ``HxWx3`` / ``HxWx4`` (or torch tensors, ``CxHxW`` accepted).
        titles: Optional title per image.
        ncols: Number of columns.

    Returns:
        The PNG path.

    """
    if not images:
        raise DataError("images is empty; pass at least one image")
    if titles is not None and len(titles) != len(images):
        raise ConfigError(f"got {len(titles)} titles for {len(images)} images; pass one title per image or None")
    if isinstance(ncols, bool) or not isinstance(ncols, int) or ncols < 1:
        raise ConfigError(f"ncols must be a positive integer (got {ncols!r})")
    arrays = [_to_image(img, i) for i, img in enumerate(images)]
    ncols = min(ncols, len(arrays))
    nrows = -(-len(arrays) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.2 * ncols, 2.2 * nrows + 0.3), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(arrays):
            ax.imshow(arrays[i], cmap="gray" if arrays[i].ndim == 2 else None)
            if titles is not None:
                ax.set_title(str(titles[i]), fontsize=9)
    return _save(fig, path)
