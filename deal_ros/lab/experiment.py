"""Train-and-evaluate runs on frames with ground truth: the demo's and the ablation's shared engine.

One arm = one configuration trained for a fixed number of steps from the same seed on the same
frames. Pseudo-label mIoU is measured on the training frames (what the segmentation head learns
from), mask mIoU on held-out frames (what a planner would get). Ignore (255) pseudo-label pixels
count as background, as the planner would read them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from deal_ros.config import DealRosConfig
from deal_ros.inference.segmenter import Segmenter
from deal_ros.labels.evaluation import LabelledFrame, evaluate, per_class_iou
from deal_ros.training.trainer import OnlineTrainer, StepStats


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
    pseudo_quality: dict[str, float] = field(default_factory=dict)
    """LabelQuality.as_dict() of the final pseudo-labels: objects_iou, right_class, wrong_class,
    background_as_object."""
    mask_quality: dict[str, float] = field(default_factory=dict)
    """The same of the final masks."""
    indistinct_classes: list[list[str]] = field(default_factory=list)
    """Groups of classes the training tags could not tell apart (one class each for right_group)."""

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "history"}


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
    segmenter.label_like(trainer)  # every training frame is in already
    groups = trainer.contrast.groups()
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
            point = evaluate(cfg, segmenter, pseudo_frames, eval_frames, groups)
            curve.append({"step": trainer.step, "pseudo_miou": point.pseudo.miou(), "mask_miou": point.masks.miou()})
    final = evaluate(cfg, segmenter, pseudo_frames, eval_frames, groups)
    names = ["background", *cfg.classes]
    curve.append({"step": trainer.step, "pseudo_miou": final.pseudo.miou(), "mask_miou": final.masks.miou()})
    step_times = [h["step_time_s"] for h in history]
    result = ArmResult(name=name, pseudo_miou=final.pseudo.miou(), mask_miou=final.masks.miou(),
                       pseudo_iou=per_class_iou(final.pseudo, names), mask_iou=per_class_iou(final.masks, names),
                       mean_step_time_s=float(np.mean(step_times)) if step_times else 0.0,
                       wall_time_s=time.perf_counter() - start, history=history, curve=curve,
                       pseudo_cover=final.pseudo_cover, pseudo_quality=final.pseudo_quality.as_dict(),
                       mask_quality=final.mask_quality.as_dict(), indistinct_classes=trainer.indistinct_classes())
    return result, trainer


