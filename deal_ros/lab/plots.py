"""The lab's figures (loss curves, mIoU bars, quality tables' plots), written atomically.

matplotlib is the lab extra's (`pip install .[lab]`); `deal-ros train` plots through here when it is installed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from deal_ros.storage.files import atomic_write

if TYPE_CHECKING:
    from deal_ros.lab.experiment import ArmResult


def save_figure(fig: Any, path: str | Path, dpi: int = 100) -> None:
    """fig.savefig(path) atomically (the format from path's suffix), then close the matplotlib figure."""
    try:
        atomic_write(path, lambda tmp: fig.savefig(str(tmp), dpi=dpi), suffix=Path(path).suffix)
    finally:
        plt.close(fig)


def plot_losses(histories: Mapping[str, Sequence[Mapping[str, Any]]], path: str | Path,
                keys: Sequence[str] = ("loss_cls", "loss_deal", "loss_seg")) -> None:
    """One panel per loss term, one line per named history of StepStats dicts (smoothed over 10 steps).

    Takes plain histories, not ArmResults, so that the demo's arms and a single `deal-ros train`
    run (whose history may continue a resumed one) plot alike. Steps come from each entry's 'step'.
    Written atomically (save_figure).
    """
    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        for index, (name, history) in enumerate(histories.items()):
            values = np.array([h[key] for h in history], dtype=float)
            if values.size == 0 or not np.any(values):
                continue  # a term this run did not use (its colour stays reserved: same colour per run)
            steps = np.array([h.get("step", i + 1) for i, h in enumerate(history)])
            kernel = np.ones(min(10, values.size)) / min(10, values.size)
            ax.plot(steps[kernel.size - 1:], np.convolve(values, kernel, mode="valid"), label=name,
                    color=f"C{index % 10}")
        if ax.get_lines():
            ax.legend(fontsize=8)
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def plot_bars(results: Sequence[ArmResult], path: str | Path) -> None:
    """Pseudo-label and mask mIoU per arm as grouped bars (written atomically)."""
    x = np.arange(len(results))
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(results)), 3.5))
    ax.bar(x - 0.2, [r.pseudo_miou for r in results], 0.4, label="pseudo-label mIoU")
    ax.bar(x + 0.2, [r.mask_miou for r in results], 0.4, label="mask mIoU")
    ax.set_xticks(x, [r.name for r in results], rotation=20, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def plot_quality(rows: list[dict[str, Any]], path: Path) -> None:
    """Mask mIoU (bars) and pseudo-label mIoU (dots) per family and recipe, and the held-out mask mIoU learning
    curves (one colour per recipe, one line style per family)."""
    families = list(dict.fromkeys(r["family"] for r in rows))
    recipes = list(dict.fromkeys(r["name"] for r in rows))
    fig, (bars, curves) = plt.subplots(1, 2, figsize=(13, 3.8), gridspec_kw={"width_ratios": [2, 1]})
    width = 0.8 / max(len(recipes), 1)
    styles = ("-", "--", ":", "-.")
    for r in rows:
        i, f = recipes.index(r["name"]), families.index(r["family"])
        x = f + (i - (len(recipes) - 1) / 2) * width
        bars.bar(x, r["mask_miou"], width, color=f"C{i % 10}", label=r["name"] if f == 0 else None)
        bars.plot(x, r["pseudo_miou"], "ko", markersize=3)
        for curve in r["curves"]:
            curves.plot([c["step"] for c in curve], [c["mask_miou"] for c in curve], color=f"C{i % 10}",
                        linestyle=styles[f % len(styles)], marker="o", markersize=2, alpha=0.8)
    bars.set_xticks(np.arange(len(families)), families, fontsize=8)
    bars.set_ylim(0, 1)
    bars.set_title("held-out mask mIoU (bars), pseudo-label mIoU (dots)")
    bars.legend(fontsize=7)
    curves.set_title("held-out mask mIoU")
    curves.set_xlabel("step")
    curves.set_ylim(0, 1)
    for ax in (bars, curves):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def plot_validation(curve: Sequence[Mapping[str, Any]], num_frames: int, path: str | Path) -> None:
    """Held-out mask and pseudo-label mIoU against the step (`deal-ros train --val-bag`'s val_miou.png)."""
    steps = [p["step"] for p in curve]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(steps, [p["mask_miou"] for p in curve], "o-", label="mask mIoU")
    ax.plot(steps, [p["pseudo_miou"] for p in curve], "s-", label="pseudo-label mIoU")
    ax.set_xlabel("step")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"held-out: {num_frames} frames")
    fig.tight_layout()
    save_figure(fig, path)


def plot_live(windows: Sequence[Mapping[str, Any]], path: str | Path, title: str = "",
              tag_changes_s: Sequence[float] = ()) -> None:
    """`deal-ros bench live`: window mask mIoU (published masks, and all masks withheld ones included) and the
    window's mean training loss against wall-clock seconds since the stream started; a vertical line where the
    tags changed (new objects in view)."""
    ends = [w["end_s"] for w in windows]

    def values(key: str) -> list[float]:
        return [np.nan if w[key] is None else w[key] for w in windows]

    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.plot(ends, values("miou"), "o-", label="mask mIoU (published)")
    ax.plot(ends, values("miou_all"), "x--", color="C0", alpha=0.5, label="mask mIoU (all, withheld included)")
    for level in (0.5, 0.6, 0.7):
        ax.axhline(level, color="grey", linewidth=0.6, linestyle=":")
    for change_s in tag_changes_s:
        ax.axvline(change_s, color="C2", linewidth=0.8, alpha=0.6)
    ax.set_xlabel("wall-clock seconds since the stream started (window end)")
    ax.set_ylabel("window mIoU")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    loss_ax = ax.twinx()
    loss_ax.plot(ends, values("loss"), "s-", color="C3", markersize=3, label="training loss (window mean)")
    loss_ax.set_ylabel("loss")
    lines = ax.get_lines()[:2] + loss_ax.get_lines()
    ax.legend(lines, [str(line.get_label()) for line in lines], fontsize=7, loc="lower right")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
