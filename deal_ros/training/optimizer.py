"""The optimizers of the trainer and the one learning-rate rule (train.lr, train.backbone_lr_scale).

Every optimizer group gets its lr, weight decay and momentum here: at construction, after a run-time
config change and after a resume (the config's values win over the saved state's, so a new train.lr
given on resume takes effect). The rule: the group named 'backbone' learns at lr * backbone_lr_scale,
every other group (the heads, the structure losses' modules) at lr.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from deal_ros.config import TrainConfig

OPTIMIZER_FIELDS = ("lr", "backbone_lr_scale", "weight_decay", "momentum")
"""TrainConfig fields that live in the optimizer state; on resume the config's values win."""


def group_lr(train: TrainConfig, group: dict[str, Any]) -> float:
    """The learning rate of one optimizer group."""
    return train.lr * (train.backbone_lr_scale if group.get("name") == "backbone" else 1.0)


def make_optimizer(train: TrainConfig, params: Iterable[torch.nn.Parameter] | list[dict[str, Any]],
                   ) -> torch.optim.Optimizer:
    """train.optimizer ('sgd' or 'adamw') over `params` (parameters, or groups with a 'name'), set by the rule."""
    optimizer: torch.optim.Optimizer
    if train.optimizer == "sgd":
        optimizer = torch.optim.SGD(params, lr=train.lr, momentum=train.momentum, weight_decay=train.weight_decay)
    else:
        optimizer = torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay)
    apply_settings(optimizer, train)
    return optimizer


def apply_settings(optimizer: torch.optim.Optimizer, train: TrainConfig) -> None:
    """Set every group's lr (by the rule), weight decay and momentum (SGD) from `train`."""
    for group in optimizer.param_groups:
        group["lr"] = group_lr(train, group)
        group["weight_decay"] = train.weight_decay
        if "momentum" in group:
            group["momentum"] = train.momentum


def optimizer_changes(old: TrainConfig, new: TrainConfig) -> list[str]:
    """'train.lr 0.001 -> 0.002' for each optimizer setting that differs (what a resume applies)."""
    return [f"train.{key} {getattr(old, key)} -> {getattr(new, key)}"
            for key in OPTIMIZER_FIELDS if getattr(old, key) != getattr(new, key)]
