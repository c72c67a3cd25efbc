"""Named training recipes of the lab: the quality benchmark's, the ablation's loss sets, the demo's arms.

A recipe is config overrides on top of the package defaults (plus --set); each says whether DEAL (and which
depth-edge map) and the support-plane prior are on, whatever the defaults are.
"""

from __future__ import annotations

import os
from typing import Any

from deal_ros.config import BUILTIN_WEIGHTS, DealRosConfig
from deal_ros.config.loading import parse_overrides
from deal_ros.errors import UserError

# -- `deal-ros bench quality` ----------------------------------------------------------------------

PAPER_MAP = {"loss.deal.edge_operator": "sobel", "loss.deal.log_depth": False, "loss.deal.edge_norm": "max",
             "loss.deal.hole_fill": "far"}
"""The paper's depth-edge map (Sobel of metric depth over its per-image maximum), holes filled."""

NO_PLANE = {"pseudo_label.support_plane": False}
RECIPES: dict[str, dict[str, Any]] = {
    "cls-only": {"loss.deal.enabled": False, **NO_PLANE},
    "paper-map": {"loss.deal.enabled": True, **PAPER_MAP, **NO_PLANE},
    "robust-map": {"loss.deal.enabled": True, **NO_PLANE},
    "plane": {"loss.deal.enabled": False, "pseudo_label.support_plane": True},
    "plane+robust-map": {"loss.deal.enabled": True, "pseudo_label.support_plane": True},
    "plane+paper-map": {"loss.deal.enabled": True, "pseudo_label.support_plane": True, **PAPER_MAP},
    "default": {},
    "isl+fsl": {"loss.isl.enabled": True, "loss.fsl.enabled": True},
    "ssc": {"loss.ssc.enabled": True, "loss.recon.enabled": True},
}
"""Named recipes: overrides on top of the package defaults (plus --set); each says whether DEAL (and which
depth-edge map) and the support-plane prior are on, whatever the defaults are. A recipe may also be given
inline as NAME:KEY=VALUE,KEY=VALUE (e.g. 'lr3:train.lr=3e-3')."""

DEFAULT_RECIPES = ("cls-only", "paper-map", "robust-map", "plane", "plane+robust-map")


def parse_recipe(spec: str) -> tuple[str, dict[str, Any]]:
    """'default' -> ('default', {}); 'lr3:train.lr=3e-3,train.optimizer=sgd' -> ('lr3', {...})."""
    if ":" in spec:
        name, _, body = spec.partition(":")
        items = [item for item in body.split(",") if item.strip()]
        if not name or not items:
            raise UserError(f"recipe {spec!r}: expected NAME:KEY=VALUE[,KEY=VALUE...]")
        return name, parse_overrides(items)
    if spec not in RECIPES:
        raise UserError(f"unknown recipe {spec!r}; known: {sorted(RECIPES)} (or NAME:KEY=VALUE,...)")
    return spec, dict(RECIPES[spec])


# -- `deal-ros ablate`: loss sets ---------------------------------------------------------------

TOKENS: dict[str, dict[str, Any]] = {
    "cls": {},
    "deal": {"loss.deal.enabled": True},
    "isl": {"loss.isl.enabled": True},
    "fsl": {"loss.fsl.enabled": True},
    "smooth": {"loss.smoothness.enabled": True, "loss.smoothness.source": "depth"},
    "smooth-pl": {"loss.smoothness.enabled": True, "loss.smoothness.source": "pseudo_label"},
    "boundary": {"loss.boundary.enabled": True, "loss.smoothness.enabled": True, "loss.smoothness.source": "learned"},
    "ssc": {"loss.ssc.enabled": True, "loss.recon.enabled": True},
    "ssc-sm": {"loss.ssc.enabled": True},
    "recon": {"loss.recon.enabled": True},
}
"""Token -> config overrides; a set's overrides are the union of its tokens' on top of everything off."""

ALL_OFF = {f"loss.{name}.enabled": False for name in ("deal", "isl", "fsl", "smoothness", "boundary", "ssc", "recon")}
DEFAULT_SETS = ("cls", "cls+deal", "cls+deal+isl+fsl", "cls+deal+smooth", "cls+deal+boundary", "cls+deal+ssc")
REFERENCE_SET = "cls+deal"


def set_overrides(name: str) -> dict[str, Any]:
    """'cls+deal+fsl' -> config overrides (everything else off); unknown tokens are a UserError."""
    tokens = [t.strip() for t in name.split("+") if t.strip()]
    if not tokens or tokens[0] != "cls":
        raise UserError(f"loss set {name!r} must start with 'cls' (e.g. 'cls+deal+fsl')")
    unknown = [t for t in tokens if t not in TOKENS]
    if unknown:
        raise UserError(f"unknown loss token(s) {unknown} in {name!r}; known: {sorted(TOKENS)}")
    overrides = dict(ALL_OFF)
    for token in tokens:
        overrides.update(TOKENS[token])
    return overrides


# -- `deal-ros demo` --------------------------------------------------------------------------------

DEMO_ARMS = {
    "cls only": RECIPES["cls-only"],
    "cls + DEAL (paper)": RECIPES["paper-map"],
    "cls + DEAL (robust)": RECIPES["robust-map"],
    "default (support plane)": RECIPES["default"],
}
"""Arm name -> config overrides on top of the demo config: tags alone, + DEAL with the paper's and with the robust
depth-edge map (no support-plane prior), and the package's default recipe (RECIPES)."""


def resolve_weights(option: str) -> str:
    """--weights -> model.pretrained_path: 'auto' = $DEAL_ROS_WEIGHTS if set, else 'builtin'; 'none' = ''."""
    if option == "auto":
        return os.environ.get("DEAL_ROS_WEIGHTS", "") or BUILTIN_WEIGHTS
    return "" if option == "none" else option


def demo_config(height: int, width: int, weights: str, seed: int) -> DealRosConfig:
    """The demo's base configuration: small input, CPU-sized batch, short warm-ups.

    With ImageNet weights the backbone trains at a tenth of the heads' rate (its BatchNorm frozen, as
    the weights' profile says); from random init everything trains at the same rate.
    """
    from deal_ros.lab.synthetic import CLOSEUP_CLASSES

    return DealRosConfig(classes=list(CLOSEUP_CLASSES)).updated({
        "model.input_height": height,
        "model.input_width": width,
        "model.output_stride": 16,
        "model.pretrained_path": weights,
        "train.batch_size": 8,
        "train.lr": 1e-3,
        "train.backbone_lr_scale": 0.1 if weights else 1.0,
        "train.seed": seed,
        "train.device": "auto",
        "loss.deal.warmup_steps": 50,
        "loss.seg_warmup_steps": 60,
    })
