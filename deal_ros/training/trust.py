"""Are the masks trustworthy yet? The segmentation head's agreement with its pseudo-labels, smoothed, with hysteresis.

A planner needs one yes / no, not a loss curve. The head learns from the pseudo-labels of the training batches; the
mIoU between its argmax and those labels (on the pixels with a confident label) rises as it learns them, and on
the built-in close-up scenes it tracks the held-out mask mIoU (scripts/trust_vs_heldout.py). One batch is
noisy, so the rule uses the mean over the last `trust.window_steps` steps that had pseudo-labels, and it has
hysteresis: trusted once that mean stays >= `trust.min_agreement` for `trust.hold_steps` steps in a row, untrusted
again only below `min_agreement - release_margin`. The agreement is computed under no_grad from tensors the
objective already has: it changes neither the loss nor any random stream.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Any

import torch

from deal_ros.config import IGNORE_INDEX, TrustConfig
from deal_ros.labels.metrics import ConfusionMatrix


@dataclass(frozen=True)
class HeadAgreement:
    """How well the segmentation head's argmax matches the pseudo-labels on one batch (confident pixels only)."""

    miou: float
    """Mean over the classes present in the labels or the argmax of IoU(argmax == c, label == c)."""
    pixel_accuracy: float
    """Share of the confident pixels whose argmax is their label."""


@torch.no_grad()
def head_agreement(seg_logits: torch.Tensor, labels: torch.Tensor) -> HeadAgreement | None:
    """seg_logits (B, K+1, h, w), labels (B, h, w) class ids with IGNORE_INDEX = not confident; None when no pixel
    has a confident label."""
    matrix = ConfusionMatrix(seg_logits.shape[1], ignore_index=IGNORE_INDEX)
    matrix.update(seg_logits.argmax(dim=1), labels)
    if matrix.total == 0:
        return None
    return HeadAgreement(miou=matrix.miou(), pixel_accuracy=matrix.pixel_accuracy())


class TrustTracker:
    """The trust rule over the steps of one training run; `update` after every step, state saved in checkpoints."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Fresh weights (trainer reset): nothing measured, not trusted."""
        self.recent: collections.deque[float] = collections.deque()
        self.trusted = False
        self.since_step: int | None = None
        """The step at which the masks became trusted (None while not trusted)."""
        self.run = 0
        """Steps in a row with the smoothed agreement >= min_agreement (while not trusted)."""

    @property
    def agreement(self) -> float | None:
        """The mean head agreement (mIoU) of the recent steps with pseudo-labels (None before the first)."""
        return sum(self.recent) / len(self.recent) if self.recent else None

    def update(self, step: int, agreement: float | None, cfg: TrustConfig) -> bool:
        """After training step `step` with this batch's head agreement (None: no pseudo-labels, nothing changes);
        returns whether `trusted` changed."""
        if agreement is None:
            return False
        self.recent.append(agreement)
        while len(self.recent) > cfg.window_steps:
            self.recent.popleft()
        smoothed = self.agreement
        assert smoothed is not None
        before = self.trusted
        if self.trusted:
            if smoothed < cfg.min_agreement - cfg.release_margin:
                self.trusted, self.since_step, self.run = False, None, 0
        else:
            full = len(self.recent) >= cfg.window_steps  # a mean of fewer steps is not evidence yet
            self.run = self.run + 1 if full and smoothed >= cfg.min_agreement else 0
            if self.run >= cfg.hold_steps:
                self.trusted, self.since_step = True, step
        return self.trusted != before

    def summary(self, cfg: TrustConfig) -> dict[str, Any]:
        """What the status topic says: the verdict, the smoothed agreement and the rule's numbers."""
        agreement = self.agreement
        return {"masks_trusted": self.trusted,
                "head_agreement": None if agreement is None else round(agreement, 4),
                "trusted_since_step": self.since_step, "steps_measured": len(self.recent),
                "window_steps": cfg.window_steps, "min_agreement": cfg.min_agreement,
                "release_below": round(cfg.min_agreement - cfg.release_margin, 4), "hold_steps": cfg.hold_steps}

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state (a checkpoint's extra['trust']): a resumed trainer keeps its verdict."""
        return {"recent": list(self.recent), "trusted": self.trusted, "since_step": self.since_step, "run": self.run}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.recent = collections.deque(float(v) for v in state.get("recent", []))
        self.trusted = bool(state.get("trusted", False))
        since = state.get("since_step")
        self.since_step = None if since is None else int(since)
        self.run = int(state.get("run", 0))


def checkpoint_trusted(extra: dict[str, Any]) -> bool:
    """Whether a checkpoint's weights were trusted when saved (extra['trust']); False for checkpoints without it."""
    trust = extra.get("trust")
    return bool(trust.get("trusted", False)) if isinstance(trust, dict) else False
