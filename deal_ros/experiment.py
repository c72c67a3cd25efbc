"""Train-and-evaluate runs on frames with ground truth: the demo's and the ablation's shared engine.

One arm = one configuration trained for a fixed number of steps from the same seed on the same
frames. Pseudo-label mIoU is measured on the training frames (what the segmentation head learns
from), mask mIoU on held-out frames (what a planner would get). Ignore (255) pseudo-label pixels
count as background (method.md §4).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from deal_ros.config import DealRosConfig
from deal_ros.metrics import ConfusionMatrix
from deal_ros.segmenter import Segmenter
from deal_ros.trainer import OnlineTrainer, StepStats
from deal_ros.visualize import save_figure


class LabelledFrame(Protocol):
    rgb: np.ndarray
    depth_m: np.ndarray
    gt_mask: np.ndarray
    tags: list[str]


@dataclass
class ArmResult:
    name: str
    pseudo_miou: float
    mask_miou: float
    pseudo_iou: dict[str, float]
    mask_iou: dict[str, float]
    mean_step_time_s: float
    wall_time_s: float
    history: list[dict[str, Any]] = field(default_factory=list)
    curve: list[dict[str, float]] = field(default_factory=list)
    """Learning curve: {'step', 'pseudo_miou', 'mask_miou'} every `evaluate_every` steps (and at the end)."""
    pseudo_cover: dict[str, float] = field(default_factory=dict)
    """Per class: mean fraction of the frame its pseudo-label covers, over the frames tagged with it (a class
    recognised from its context covers most of the frame: the diffuse-CAM signature)."""

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "history"}


def per_class_iou(matrix: ConfusionMatrix, names: Sequence[str]) -> dict[str, float]:
    """Class name -> IoU of a confusion matrix whose rows are `names`."""
    return {name: float(iou) for name, iou in zip(names, matrix.iou(), strict=True)}


@dataclass
class Evaluation:
    """Confusion matrices of pseudo-labels and masks, and the per-class pseudo-label cover."""

    pseudo: ConfusionMatrix
    masks: ConfusionMatrix
    pseudo_cover: dict[str, float]


def evaluate(cfg: DealRosConfig, segmenter: Segmenter, pseudo_frames: Sequence[LabelledFrame],
             mask_frames: Sequence[LabelledFrame]) -> Evaluation:
    """Pseudo-labels (from CAMs + the frames' tags; 255 counts as background) on pseudo_frames, masks (no
    tags) on mask_frames, against the ground truth."""
    names = ["background", *cfg.classes]
    pseudo = ConfusionMatrix(len(names), names)
    masks = ConfusionMatrix(len(names), names)
    cover: dict[str, list[float]] = {name: [] for name in cfg.classes}
    for frame in pseudo_frames:
        result = segmenter(frame.rgb, frame.depth_m, frame.tags)
        assert result.pseudo_label is not None
        pseudo.update(result.pseudo_label, frame.gt_mask)
        for tag in frame.tags:
            cover[tag].append(float((result.pseudo_label == cfg.classes.index(tag) + 1).mean()))
    for frame in mask_frames:
        masks.update(segmenter(frame.rgb).mask, frame.gt_mask)
    return Evaluation(pseudo, masks, {name: float(np.mean(v)) for name, v in cover.items() if v})


def run_arm(name: str, cfg: DealRosConfig, train_frames: Sequence[LabelledFrame], eval_frames: Sequence[LabelledFrame],
            steps: int, on_step: Callable[[StepStats], None] | None = None, pseudo_on_eval: bool = False,
            evaluate_every: int = 0) -> tuple[ArmResult, OnlineTrainer]:
    """Train `cfg` for `steps` steps on train_frames, then evaluate; returns the result and the trainer.

    Pseudo-labels are scored on the training frames (what the segmentation head learns from) or, with
    pseudo_on_eval, on the held-out frames with their tags (what `deal-ros label` gives on a new bag).
    evaluate_every > 0 records a learning curve on the held-out frames (evaluation time is not step time).
    """
    start = time.perf_counter()
    trainer = OnlineTrainer(cfg)
    for frame in train_frames:
        trainer.add_frame(frame.rgb, frame.depth_m, frame.tags)
    segmenter = Segmenter(cfg, trainer.model, model_lock=trainer.model_lock)
    pseudo_frames = eval_frames if pseudo_on_eval else train_frames
    history: list[dict[str, Any]] = []
    curve: list[dict[str, float]] = []
    while trainer.step < steps:
        stats = trainer.train_step()
        if stats is None:
            continue
        history.append(stats.as_dict())
        if on_step is not None:
            on_step(stats)
        if evaluate_every > 0 and trainer.step % evaluate_every == 0 and trainer.step < steps:
            point = evaluate(cfg, segmenter, pseudo_frames, eval_frames)
            curve.append({"step": trainer.step, "pseudo_miou": point.pseudo.miou(), "mask_miou": point.masks.miou()})
    final = evaluate(cfg, segmenter, pseudo_frames, eval_frames)
    names = ["background", *cfg.classes]
    curve.append({"step": trainer.step, "pseudo_miou": final.pseudo.miou(), "mask_miou": final.masks.miou()})
    step_times = [h["step_time_s"] for h in history]
    result = ArmResult(name=name, pseudo_miou=final.pseudo.miou(), mask_miou=final.masks.miou(),
                       pseudo_iou=per_class_iou(final.pseudo, names), mask_iou=per_class_iou(final.masks, names),
                       mean_step_time_s=float(np.mean(step_times)) if step_times else 0.0,
                       wall_time_s=time.perf_counter() - start, history=history, curve=curve,
                       pseudo_cover=final.pseudo_cover)
    return result, trainer


def plot_losses(histories: Mapping[str, Sequence[Mapping[str, Any]]], path: str | Path,
                keys: Sequence[str] = ("loss_cls", "loss_deal", "loss_seg")) -> None:
    """One panel per loss term, one line per named history of StepStats dicts (smoothed over 10 steps).

    Takes plain histories, not ArmResults, so that the demo's arms and a single `deal-ros train`
    run (whose history may continue a resumed one) plot alike. Steps come from each entry's 'step'.
    Written atomically (deal_ros.visualize.save_figure).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
