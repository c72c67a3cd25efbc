"""`deal-ros train --val-bag`: held-out frames with ground truth, scored while training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deal_ros.cli import UserError
from deal_ros.cli.figures import write_figure
from deal_ros.config import DealRosConfig


class Validation:
    """Held-out frames with ground truth, scored during training: mask and pseudo-label mIoU per class."""

    def __init__(self, bag: str, gt_dir: str, cfg: DealRosConfig, every: int) -> None:
        from deal_ros.io.ground_truth import load_bag

        size = (cfg.model.input_height, cfg.model.input_width)
        self.frames = load_bag(bag, gt_dir, size, list(cfg.classes), 10**9, cfg.depth.float_unit)
        if not self.frames:
            raise UserError(f"--val-bag {bag}: no frame has a ground-truth mask in {gt_dir}")
        self.cfg, self.every = cfg, every
        self.curve: list[dict[str, Any]] = []

    def due(self, step: int, last_step: int) -> bool:
        return step == last_step or (self.every > 0 and step % self.every == 0)

    def evaluate(self, trainer: Any) -> dict[str, Any]:
        """Score the trainer's current weights on the held-out frames; the point is appended to `curve`."""
        from deal_ros.inference.segmenter import Segmenter
        from deal_ros.labels.evaluation import evaluate, per_class_iou

        # The segmenter switches a shared training model to eval for each frame and back.
        segmenter = Segmenter(self.cfg, trainer.model, model_lock=trainer.model_lock)
        segmenter.label_like(trainer)
        result = evaluate(self.cfg, segmenter, self.frames, self.frames, trainer.contrast.groups())
        point = {"step": trainer.step, "mask_miou": result.masks.miou(), "pseudo_miou": result.pseudo.miou(),
                 "mask_iou": per_class_iou(result.masks, ["background", *self.cfg.classes])}
        self.curve.append(point)
        return point

    def plot(self, path: Path) -> None:
        """val_miou.png: the held-out mIoU against the step."""
        write_figure(path, lambda plots: plots.plot_validation(self.curve, len(self.frames), path))
