"""One configuration schema for the core, the command-line tool and the ROS nodes.

The schema is a tree of dataclasses. It loads from a plain YAML file or from a ROS 2 parameter
file (the same tree under ``<node>: ros__parameters:``), is validated on construction, and
round-trips through ``to_dict`` (checkpoints store it as JSON).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deal_ros.errors import DealRosError


class ConfigError(DealRosError, ValueError):
    """A configuration value is missing, unknown or out of range; the message names the key."""


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"config '{key}': {message}")


def _one_of(value: str, key: str, choices: tuple[str, ...]) -> None:
    _check(value in choices, key, f"must be one of {list(choices)}, got {value!r}")


ARCHITECTURE_FIELDS = ("backbone", "output_stride", "padding", "input_norm", "seg_head_channels")
"""ModelConfig fields that a checkpoint must share with the configuration it is loaded into (compared after
:meth:`ModelConfig.resolved`, so 'auto' means what the weights need)."""

BUILTIN_WEIGHTS = "builtin"
"""``model.pretrained_path`` of the package's own ImageNet MobileNetV2 (``deal_ros/models/data``)."""

BUILTIN_PROFILE = {"input_norm": "tf", "padding": "tf_same"}
"""What the built-in weights need: TF-trained, so pixel/128 - 1 and TF 'SAME' padding (with symmetric
padding their ImageNet top-1 agreed with TFLite on 11 of 24 photos instead of 24)."""

FILE_PROFILE = {"input_norm": "imagenet", "padding": "symmetric"}
"""What torchvision/timm weight files (and random init) get for 'auto': ImageNet mean/std, symmetric padding."""


@dataclass
class ModelConfig:
    """The CAM network: backbone + CAM head (K maps) + segmentation head (K + 1 classes)."""

    backbone: str = "mobilenet_v2"
    """Backbone name from the registry: mobilenet_v2, resnet18, resnet50."""
    output_stride: int = 16
    """Stride of the last feature map (8 or 16, via dilation)."""
    pretrained_path: str = BUILTIN_WEIGHTS
    """ImageNet weights: 'builtin' (the package's MobileNetV2, checksum-verified), a torchvision/timm file (path
    to a .pth/.safetensors state dict, or its file name in the torch hub cache), or '' = random init."""
    freeze_stages: int = 3
    """Number of early backbone stages of pretrained weights kept frozen (3 = up to stride 8: generic edges and
    textures that a few hundred steps on one robot's frames should not re-learn; also a cheaper backward).
    A randomly initialised backbone trains every stage."""
    freeze_bn: bool = True
    """Keep pretrained BatchNorm in eval mode, affine frozen (must stay true for the built-in weights: their BN
    is folded). A randomly initialised backbone always trains its BatchNorm."""
    padding: str = "auto"
    """MobileNetV2's stride-2 convs: 'tf_same' (TF 'SAME'), 'symmetric' (torchvision), 'auto' = what the weights
    need (tf_same for builtin, symmetric for files and random init)."""
    input_norm: str = "auto"
    """Input normalisation: 'tf' (pixel/128 - 1), 'imagenet' (mean/std), 'auto' = what the weights need (tf for
    builtin, imagenet for torchvision/timm files and random init)."""
    input_height: int = 240
    """Network input height in pixels; frames are resized to this for training and inference."""
    input_width: int = 320
    """Network input width in pixels."""
    seg_head_channels: int = 64
    """Channels of the light segmentation head."""
    seg_head_detach: bool = False
    """Train the segmentation head on detached backbone features, so its cross-entropy cannot reshape the CAM
    features. Off by default: with the support-plane pseudo-labels the head's loss improves the shared features
    (held-out close-up mask mIoU 0.63 -> 0.69 at 300 steps, README); on when pseudo-labels are poor (no
    depth plane), where early noisy labels degraded the CAMs."""

    def validate(self) -> None:
        _one_of(self.backbone, "model.backbone", ("mobilenet_v2", "resnet18", "resnet50"))
        _check(self.output_stride in (8, 16), "model.output_stride", f"must be 8 or 16, got {self.output_stride}")
        _check(0 <= self.freeze_stages <= 5, "model.freeze_stages", "must be in [0, 5]")
        _one_of(self.input_norm, "model.input_norm", ("auto", "tf", "imagenet"))
        _one_of(self.padding, "model.padding", ("auto", "tf_same", "symmetric"))
        _check(self.padding != "tf_same" or self.backbone == "mobilenet_v2", "model.padding",
               f"'tf_same' exists for mobilenet_v2 only, not {self.backbone}")
        if self.pretrained_path == BUILTIN_WEIGHTS and self.backbone == "mobilenet_v2":
            for key, needed in BUILTIN_PROFILE.items():
                value = getattr(self, key)
                _check(value in ("auto", needed), f"model.{key}",
                       f"the built-in weights need {needed!r}, got {value!r} (leave it 'auto')")
            _check(self.freeze_bn, "model.freeze_bn", "the built-in weights have folded BatchNorm (an identity plus "
                   "bias), which training-mode BatchNorm breaks: it must be true")
        for key in ("input_height", "input_width"):
            value = getattr(self, key)
            _check(32 <= value <= 4096 and value % 16 == 0, f"model.{key}",
                   f"must be a multiple of 16 in [32, 4096], got {value}")
        _check(self.seg_head_channels >= 8, "model.seg_head_channels", "must be >= 8")

    def resolved(self) -> ModelConfig:
        """A copy with 'auto' replaced by what the weights need, freeze_bn and freeze_stages as applied (off for
    random init).

        Pure (no file is read): 'builtin' gets BUILTIN_PROFILE, anything else FILE_PROFILE; a weights file that
        needs other settings (a TF conversion with folded BatchNorm) is refused when loaded, saying which.
        """
        builtin = self.pretrained_path == BUILTIN_WEIGHTS and self.backbone == "mobilenet_v2"
        profile = BUILTIN_PROFILE if builtin else FILE_PROFILE
        return dataclasses.replace(
            self,
            input_norm=profile["input_norm"] if self.input_norm == "auto" else self.input_norm,
            padding=profile["padding"] if self.padding == "auto" else self.padding,
            freeze_bn=self.freeze_bn and bool(self.pretrained_path),
            freeze_stages=self.freeze_stages if self.pretrained_path else 0,
        )

    def architecture(self) -> dict[str, Any]:
        """The resolved ARCHITECTURE_FIELDS: what a checkpoint must share with the model it is loaded into."""
        resolved = self.resolved()
        return {k: getattr(resolved, k) for k in ARCHITECTURE_FIELDS}


def _migrate_model_keys(data: Any) -> Any:
    """Configs from before 'model.padding' (checkpoints, YAML files) load meaning what they meant.

    The boolean ``model.tf_same_padding`` became ``model.padding`` ('tf_same' / 'symmetric'); its old
    files also spell out input_norm, so they keep the normalisation and padding they were trained with.
    """
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, dict) or "tf_same_padding" not in model:
        return data
    value = model["tf_same_padding"]
    _check(isinstance(value, bool), "model.tf_same_padding", f"expected true/false, got {value!r}")
    _check("padding" not in model, "model.tf_same_padding", "replaced by model.padding: give only model.padding")
    migrated = {k: v for k, v in model.items() if k != "tf_same_padding"}
    migrated["padding"] = "tf_same" if value else "symmetric"
    return {**data, "model": migrated}


@dataclass
class DepthConfig:
    """How raw depth becomes metres + validity (method.md §2 step 1)."""

    min_m: float = 0.1
    """Depth below this (metres) is treated as a hole."""
    max_m: float = 10.0
    """Depth above this (metres) is treated as a hole."""

    def validate(self) -> None:
        _check(0.0 <= self.min_m < self.max_m, "depth.min_m", "need 0 <= min_m < max_m")


@dataclass
class DEALConfig:
    """Depth Edge Alignment Loss settings; every '(ours)' choice of method.md §2 is here."""

    enabled: bool = False
    """Off by default, by measurement: with the support-plane pseudo-labels (pseudo_label.support_plane) DEAL
    lowered held-out close-up mask mIoU at 300 steps (0.68 -> 0.63, two seeds, README); without that prior
    (no plane in view, or support_plane: false) the robust map raised it (0.19 -> 0.28). Turn it on where no
    support plane is in view (shelves, clutter)."""
    weight: float = 1.0
    """lambda: L = L_cls + lambda * L_DEAL."""
    warmup_steps: int = 100
    """lambda ramps linearly from 0 to `weight` over these steps (a flat CAM scores well under DEAL)."""
    mu: float = 2.5
    """Soft-binarisation sharpness; an edge is anything above sigmoid(-mu) = 7.6 % of the scale."""
    grid_stride: int = 4
    """Loss grid stride relative to the network input (the CAM is upsampled to it)."""
    edge_operator: str = "plane_sobel"
    """Depth edge operator: 'sobel' (paper), 'plane_sobel' (Sobel minus local-plane gradient), 'laplacian'."""
    log_depth: bool = True
    """Take edges of log-depth (relative jumps) instead of metric depth (paper: False)."""
    edge_norm: str = "fixed"
    """Depth edge normalisation: 'max' (paper, per image), 'percentile', 'fixed' (threshold in units)."""
    edge_threshold: float = 0.0125
    """For edge_norm='fixed': the jump across a cell that counts as an edge, in log-depth units (a relative
    step: 0.0125 = 1.25 %) or metres. Our Sobel is scaled by 1/4 so a step of t reads as t; method.md's
    t = 0.05 is stated for the unscaled Sobel and is the same threshold."""
    edge_percentile: float = 99.0
    """For edge_norm='percentile': the percentile of valid edge strengths used as the scale."""
    plane_window: int = 7
    """For plane_sobel: window (cells) of the median that estimates the local plane gradient."""
    hole_fill: str = "row_far"
    """Hole filling: 'row_far' (farther row neighbour), 'far' (farthest of row/column), 'pyramid', 'none'."""
    hole_exclude_window: int = 5
    """Cells whose window x window neighbourhood is all hole are excluded (0 = exclude every hole)."""
    cam_norm: str = "minmax"
    """CAM normalisation before edges: 'minmax' (ReLU + per-map min-max, from SEAM) or 'max'."""

    def validate(self) -> None:
        _check(self.weight >= 0, "loss.deal.weight", "must be >= 0")
        _check(self.warmup_steps >= 0, "loss.deal.warmup_steps", "must be >= 0")
        _check(self.mu > 0, "loss.deal.mu", "must be > 0")
        _check(self.grid_stride in (1, 2, 4, 8, 16), "loss.deal.grid_stride", "must be 1, 2, 4, 8 or 16")
        _one_of(self.edge_operator, "loss.deal.edge_operator", ("sobel", "plane_sobel", "laplacian"))
        _one_of(self.edge_norm, "loss.deal.edge_norm", ("max", "percentile", "fixed"))
        _check(self.edge_threshold > 0, "loss.deal.edge_threshold", "must be > 0")
        _check(0 < self.edge_percentile <= 100, "loss.deal.edge_percentile", "must be in (0, 100]")
        _check(self.plane_window >= 3 and self.plane_window % 2 == 1, "loss.deal.plane_window", "must be odd >= 3")
        _one_of(self.hole_fill, "loss.deal.hole_fill", ("row_far", "far", "pyramid", "none"))
        _check(self.hole_exclude_window >= 0, "loss.deal.hole_exclude_window", "must be >= 0")
        _one_of(self.cam_norm, "loss.deal.cam_norm", ("minmax", "max"))

    def loss_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :func:`deal_ros.losses.deal_loss` / :class:`DEALLoss`."""
        skip = {"enabled", "weight", "warmup_steps"}
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip}


@dataclass
class ISLConfig:
    """Importance-sampling loss (Jonnarth et al., method.md §3): L_cls = (1 - weight) L_gap + weight L_isl."""

    enabled: bool = False
    weight: float = 0.2
    """Mixing weight of L_isl into the classification loss (paper: 0.2, i.e. 0.8 L_gap + 0.2 L_isl)."""
    num_samples: int = 10
    """Pixels sampled per (image, class) from the CAM's pmf sigmoid(s) + eps, normalised."""
    eps: float = 1e-5
    """Added to sigmoid(s) so that no pixel has zero probability."""

    def validate(self) -> None:
        _check(0 <= self.weight <= 1, "loss.isl.weight", "must be in [0, 1] (a mixing weight)")
        _check(1 <= self.num_samples <= 10000, "loss.isl.num_samples", "must be in [1, 10000]")
        _check(self.eps > 0, "loss.isl.eps", "must be > 0")


@dataclass
class FSLConfig:
    """Feature-similarity loss, local-window form (method.md §3): L += weight * L_fsl."""

    enabled: bool = False
    weight: float = 1.0
    mu: float = 2.5
    """Soft-binarisation of the colour distance: pairs closer than sigmoid(-mu) (7.6 %) count as similar."""
    sigma: float = 5.0
    """Gaussian pixel-distance weight, in CAM-grid cells."""
    radius: int = 10
    """Only pairs within this distance (cells) are used: memory O(h * w * radius^2), not O((h w)^2)."""

    def validate(self) -> None:
        _check(self.weight >= 0, "loss.fsl.weight", "must be >= 0")
        _check(self.mu > 0, "loss.fsl.mu", "must be > 0")
        _check(self.sigma > 0, "loss.fsl.sigma", "must be > 0")
        _check(1 <= self.radius <= 64, "loss.fsl.radius", "must be in [1, 64]")


@dataclass
class SmoothnessConfig:
    """Boundary-guided Charbonnier smoothness of the CAM (structure-aware WSSS, method.md §3)."""

    enabled: bool = False
    weight: float = 1.0
    source: str = "depth"
    """Boundary map S: 'depth' (depth edges), 'pseudo_label' (current pseudo-label boundaries) or 'learned'
    (the boundary branch; needs loss.boundary.enabled)."""
    alpha: float = 10.0
    """Edge-stopping strength: pair weight exp(-alpha |grad S|)."""
    first_order_weight: float = 1.0
    """Weight of the first-order term (the paper's text: 1 with 10x second order; its code: 10:1 the other way)."""
    second_order_weight: float = 0.1
    """Weight of the second-order term."""
    guide: str = "gradient"
    """'gradient': exp(-alpha |S_i - S_j|) per pair (the paper); 'edge': exp(-alpha max(S_i, S_j)) (S as edge map)."""
    grid_stride: int = 4
    """Loss grid stride relative to the network input (the CAM is upsampled to it)."""

    def validate(self) -> None:
        _check(self.weight >= 0, "loss.smoothness.weight", "must be >= 0")
        _one_of(self.source, "loss.smoothness.source", ("depth", "pseudo_label", "learned"))
        _check(self.alpha >= 0, "loss.smoothness.alpha", "must be >= 0")
        _check(self.first_order_weight >= 0 and self.second_order_weight >= 0, "loss.smoothness.*_order_weight",
               "must be >= 0")
        _one_of(self.guide, "loss.smoothness.guide", ("gradient", "edge"))
        _check(self.grid_stride in (1, 2, 4, 8, 16), "loss.smoothness.grid_stride", "must be 1, 2, 4, 8 or 16")


@dataclass
class BoundaryConfig:
    """Semantic boundary branch (training only) with BCE against pseudo-label boundaries (method.md §3)."""

    enabled: bool = False
    weight: float = 0.02
    """BCE weight (paper range 0.01-0.05)."""
    canny_low: float = 10.0
    """Canny hysteresis thresholds on the 8-bit grey image (paper: 10 / 100)."""
    canny_high: float = 100.0
    depth_edges: bool = False
    """Also feed Canny edges of the (hole-filled, log) depth to the fusion."""
    detach_features: bool = False
    """Stop the BCE gradient at the backbone features (False = multi-task, as in the paper)."""

    def validate(self) -> None:
        _check(self.weight >= 0, "loss.boundary.weight", "must be >= 0")
        _check(0 <= self.canny_low <= self.canny_high, "loss.boundary.canny_low/high", "need 0 <= low <= high")


@dataclass
class SSCConfig:
    """SSC activation self-modulation: pull the CAM towards max(CAM, superpixel-pooled CAM) (method.md §3)."""

    enabled: bool = False
    weight: float = 1.0
    start_step: int = 50
    """The term is off for the first start_step training steps (CAMs must be meaningful first)."""
    n_segments: int = 64
    """Approximate number of SLIC superpixels per image (on the loss grid)."""
    compactness: float = 10.0
    """SLIC compactness (colour vs space trade-off)."""
    use_depth: bool = False
    """Depth-aware superpixels: SLIC on Lab + scaled log-depth as a 4th channel (ours)."""
    depth_scale: float = 100.0
    """Lab units per unit of log-depth in the depth channel (100: a 10 % depth step = 10 Lab units)."""
    confidence: float = 0.3
    """The term acts where the max-normalised CAM exceeds this after erosion."""
    erosion_px: int = 8
    """Erosion window in input pixels (8 in the paper), converted to loss-grid cells."""
    grid_stride: int = 4
    """Loss grid stride relative to the network input."""

    def validate(self) -> None:
        _check(self.weight >= 0, "loss.ssc.weight", "must be >= 0")
        _check(self.start_step >= 0, "loss.ssc.start_step", "must be >= 0")
        _check(self.n_segments >= 2, "loss.ssc.n_segments", "must be >= 2")
        _check(self.compactness > 0, "loss.ssc.compactness", "must be > 0")
        _check(self.depth_scale >= 0, "loss.ssc.depth_scale", "must be >= 0")
        _check(0 <= self.confidence < 1, "loss.ssc.confidence", "must be in [0, 1)")
        _check(self.erosion_px >= 1, "loss.ssc.erosion_px", "must be >= 1")
        _check(self.grid_stride in (1, 2, 4, 8, 16), "loss.ssc.grid_stride", "must be 1, 2, 4, 8 or 16")


@dataclass
class ReconstructionConfig:
    """SSC CAM-driven reconstruction: a small decoder rebuilds the image from the CAMs (method.md §3)."""

    enabled: bool = False
    weight: float = 1.0
    perceptual_weight: float = 1.0
    """Weight of the perceptual term (L1 of frozen-backbone features; no VGG weights exist here)."""
    l1_weight: float = 1.0
    """Weight of the pixel L1 term."""
    hidden_channels: int = 32
    """Width of the decoder."""
    out_stride: int = 4
    """The image is reconstructed (and compared) at this stride of the input: cheap, still structural."""

    def validate(self) -> None:
        _check(self.weight >= 0, "loss.recon.weight", "must be >= 0")
        _check(self.perceptual_weight >= 0 and self.l1_weight >= 0, "loss.recon.*_weight", "must be >= 0")
        _check(self.hidden_channels >= 4, "loss.recon.hidden_channels", "must be >= 4")
        _check(self.out_stride in (1, 2, 4, 8), "loss.recon.out_stride", "must be 1, 2, 4 or 8")


@dataclass
class LossConfig:
    """The training objective: L_cls + lambda * L_DEAL + seg_weight * CE(seg, pseudo-labels) + structure losses."""

    deal: DEALConfig = field(default_factory=DEALConfig)
    isl: ISLConfig = field(default_factory=ISLConfig)
    fsl: FSLConfig = field(default_factory=FSLConfig)
    smoothness: SmoothnessConfig = field(default_factory=SmoothnessConfig)
    boundary: BoundaryConfig = field(default_factory=BoundaryConfig)
    ssc: SSCConfig = field(default_factory=SSCConfig)
    recon: ReconstructionConfig = field(default_factory=ReconstructionConfig)
    seg_weight: float = 1.0
    """Weight of the segmentation head's cross-entropy on pseudo-labels."""
    seg_warmup_steps: int = 30
    """The segmentation head trains only after this many steps (CAMs must tell the classes apart first)."""
    support_weight: float = 0.0
    """Weight of the support-plane loss: mean softplus of every class's CAM logit on pixels that lie on or behind
    the support plane (pseudo_label.support_tolerance), so the classifier cannot use the table as evidence."""

    def validate(self) -> None:
        _check(self.support_weight >= 0, "loss.support_weight", "must be >= 0")
        for part in (self.deal, self.isl, self.fsl, self.smoothness, self.boundary, self.ssc, self.recon):
            part.validate()
        _check(not (self.smoothness.enabled and self.smoothness.source == "learned" and not self.boundary.enabled),
               "loss.smoothness.source", "'learned' needs the boundary branch (loss.boundary.enabled: true)")
        _check(self.seg_weight >= 0, "loss.seg_weight", "must be >= 0")
        _check(self.seg_warmup_steps >= 0, "loss.seg_warmup_steps", "must be >= 0")


@dataclass
class PseudoLabelConfig:
    """From CAMs and tags to pixel labels (method.md §1); 255 = ignore."""

    cam_norm: str = "max"
    """Per-class CAM normalisation to [0, 1]: 'max' (ReLU / max, the usual WSSS choice) or 'minmax'
    (also removes a constant offset, which a GAP classifier's CAM often carries)."""
    background: str = "constant"
    """Background score: 'constant' (= bg_score) or 'power' ((1 - max_k)^alpha)."""
    bg_score: float = 0.35
    alpha: float = 4.0
    fg_threshold: float = 0.6
    """A pixel is foreground only if its top class score exceeds this."""
    bg_threshold: float = 0.25
    """A pixel is background only if every tagged class scores below this; between: ignore (255)."""
    refine: str = "depth_bilateral"
    """Refinement of the class scores before argmax: 'none' or 'depth_bilateral' (RGB + depth affinity)."""
    refine_iterations: int = 10
    refine_sigma_rgb: float = 0.1
    """Colour scale of the refinement affinity (RGB in [0, 1])."""
    refine_sigma_depth: float = 0.02
    """Relative depth scale of the refinement affinity (|dz| / z)."""
    support_plane: bool = True
    """Background prior from depth: pixels on the dominant plane (the table) or behind it (the floor past its
    edge) are background whatever the CAM says (deal_ros.support_plane), so a class recognised from its context
    cannot become a full-frame label."""
    support_tolerance: float = 0.01
    """Relative depth residual (|z - z_plane| / z_plane) within which a pixel lies on the support plane."""
    object_threshold: float = 0.2
    """With support_plane: a pixel standing out of the plane takes its top tagged class when that class scores at
    least this (else ignore); the CAM only has to tell which object it is, not where the object ends."""

    def validate(self) -> None:
        _check(0 < self.support_tolerance < 0.5, "pseudo_label.support_tolerance", "must be in (0, 0.5)")
        _check(0 <= self.object_threshold <= 1, "pseudo_label.object_threshold", "must be in [0, 1]")
        _one_of(self.cam_norm, "pseudo_label.cam_norm", ("max", "minmax"))
        _one_of(self.background, "pseudo_label.background", ("constant", "power"))
        _check(0 <= self.bg_threshold <= self.fg_threshold <= 1, "pseudo_label",
               "need 0 <= bg_threshold <= fg_threshold <= 1")
        _check(0 < self.bg_score < 1, "pseudo_label.bg_score", "must be in (0, 1)")
        _check(self.alpha > 0, "pseudo_label.alpha", "must be > 0")
        _one_of(self.refine, "pseudo_label.refine", ("none", "depth_bilateral"))
        _check(self.refine_iterations >= 0, "pseudo_label.refine_iterations", "must be >= 0")
        _check(self.refine_sigma_rgb > 0 and self.refine_sigma_depth > 0, "pseudo_label.refine_sigma_*", "must be > 0")


@dataclass
class BufferConfig:
    """The bounded frame buffer of the online trainer."""

    max_frames: int = 500
    max_bytes: int = 512 * 1024 * 1024
    class_balanced: bool = True
    """Sample frames so that every tagged class is drawn about equally often."""

    def validate(self) -> None:
        _check(self.max_frames >= 1, "buffer.max_frames", "must be >= 1")
        _check(self.max_bytes >= 1024 * 1024, "buffer.max_bytes", "must be >= 1 MiB")


@dataclass
class AugmentConfig:
    """Joint augmentation of RGB, depth and labels."""

    hflip: bool = True
    scale_min: float = 0.75
    scale_max: float = 1.25
    color_jitter: float = 0.1
    """Brightness/contrast jitter amplitude (0 = off); RGB only."""

    def validate(self) -> None:
        _check(0.25 <= self.scale_min <= self.scale_max <= 4.0, "augment.scale_min/scale_max",
               "need 0.25 <= scale_min <= scale_max <= 4")
        _check(0 <= self.color_jitter < 1, "augment.color_jitter", "must be in [0, 1)")


@dataclass
class TrainConfig:
    """Optimisation of the online / offline trainer."""

    device: str = "auto"
    """'auto' (CUDA when present, else CPU with a warning), 'cpu', 'cuda' or 'cuda:N'."""
    batch_size: int = 8
    optimizer: str = "adamw"
    lr: float = 1e-3
    """Learning rate of the heads; the backbone uses lr * backbone_lr_scale."""
    backbone_lr_scale: float = 0.1
    weight_decay: float = 1e-4
    momentum: float = 0.9
    """SGD only."""
    grad_clip: float = 5.0
    """Max gradient norm (0 = off)."""
    amp: bool = True
    """Mixed precision on CUDA (ignored on CPU)."""
    seed: int = 0
    max_steps_per_second: float = 0.0
    """Cap on the training rate of the online trainer (0 = no cap)."""

    def validate(self) -> None:
        _check(self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
               "train.device", f"must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        _check(1 <= self.batch_size <= 256, "train.batch_size", "must be in [1, 256]")
        _one_of(self.optimizer, "train.optimizer", ("adamw", "sgd"))
        # above 10 no optimiser converges, and Adam's bias-corrected step overflows float32 near 1e37
        _check(0 < self.lr <= 10, "train.lr", f"must be in (0, 10], got {self.lr:g}")
        _check(self.backbone_lr_scale >= 0, "train.backbone_lr_scale", "must be >= 0")
        _check(self.weight_decay >= 0, "train.weight_decay", "must be >= 0")
        _check(self.grad_clip >= 0, "train.grad_clip", "must be >= 0")
        _check(self.max_steps_per_second >= 0, "train.max_steps_per_second", "must be >= 0")


@dataclass
class CheckpointConfig:
    directory: str = "deal_ros_model"
    """Where checkpoints go; the latest is `<directory>/model.safetensors`."""
    period_steps: int = 200
    """Write a checkpoint every N training steps (0 = only on request)."""

    def validate(self) -> None:
        _check(self.period_steps >= 0, "checkpoint.period_steps", "must be >= 0")


@dataclass
class DealConfig:
    """Everything deal_ros needs; `classes` are the foreground class names (background is implicit)."""

    classes: list[str] = field(default_factory=lambda: ["mug", "box", "ball"])
    """Foreground class names the model learns (background is implicit, id 0); fixed for a checkpoint. The
    default is the README's example set (tags mug, box, ball): list your own objects."""
    model: ModelConfig = field(default_factory=ModelConfig)
    depth: DepthConfig = field(default_factory=DepthConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    pseudo_label: PseudoLabelConfig = field(default_factory=PseudoLabelConfig)
    buffer: BufferConfig = field(default_factory=BufferConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        _check(len(self.classes) >= 1, "classes", "need at least one foreground class")
        _check(len(self.classes) <= 254, "classes", "at most 254 classes fit in a mono8 mask with 255 = ignore")
        _check(all(isinstance(c, str) and c.strip() == c and c for c in self.classes), "classes",
               "class names must be non-empty strings without surrounding spaces")
        _check(len(set(self.classes)) == len(self.classes), "classes", "class names must be unique")
        _check("background" not in self.classes, "classes", "'background' is implicit (id 0); do not list it")
        for part in (self.model, self.depth, self.loss, self.pseudo_label, self.buffer, self.augment,
                     self.train, self.checkpoint):
            part.validate()

    @property
    def num_classes(self) -> int:
        """K, the number of foreground classes (the segmentation head has K + 1 outputs)."""
        return len(self.classes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def architecture_hash(self) -> str:
        """Short hash of what fixes the network's function: classes and ARCHITECTURE_FIELDS of the model."""
        key = json.dumps({"classes": self.classes, "model": self.model.architecture()}, sort_keys=True)
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DealConfig:
        return _build(cls, _migrate_model_keys(data), "")

    def updated(self, overrides: dict[str, Any]) -> DealConfig:
        """A copy with dotted-key overrides applied, e.g. {'loss.deal.weight': 0.5}.

        A mapping given for a section ({'train': {'lr': 0.01}}) is merged into it, key by key, so it
        never silently resets the section's other keys (or earlier overrides) to their defaults.
        """
        data = self.to_dict()
        for dotted, value in overrides.items():
            node = data
            *parents, leaf = dotted.split(".")
            for part in parents:
                _check(isinstance(node.get(part), dict), dotted, "unknown key")
                node = node[part]
            _check(leaf in node, dotted, "unknown key")
            if isinstance(node[leaf], dict) and isinstance(value, dict):
                _merge(node[leaf], value, dotted)
            else:
                node[leaf] = value
        return DealConfig.from_dict(data)


def _merge(node: dict[str, Any], value: dict[str, Any], key: str) -> None:
    """Merge a mapping into a config section in place; unknown keys are refused, naming them."""
    for name, item in value.items():
        dotted = f"{key}.{name}"
        _check(name in node, dotted, f"unknown key (known: {sorted(node)})")
        if isinstance(node[name], dict) and isinstance(item, dict):
            _merge(node[name], item, dotted)
        else:
            node[name] = item


def _build(cls: type, data: Any, prefix: str) -> Any:
    _check(isinstance(data, dict), prefix or "<root>", f"expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    _check(not unknown, prefix + (unknown[0] if unknown else ""), f"unknown key (known: {sorted(names)})")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        key = prefix + name
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, key + ".")
        else:
            kwargs[name] = _coerce(value, hint, key)
    return cls(**kwargs)


_NUMBER = re.compile(r"[-+]?(\d[\d_]*\.?\d*|\.\d+)([eE][-+]?\d+)?")
"""A number as people write it. YAML 1.1 (PyYAML) reads 1e-4, 1E3 and 1.5e3 as strings: they are numbers here."""


def _number(value: Any) -> int | float | None:
    """An int or float from a YAML value (a number, or a string in number form); None if it is none."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        text = value.strip().replace("_", "")
        return int(text) if text.lstrip("+-").isdigit() else float(text)
    return None


def _coerce(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        _check(isinstance(value, (list, tuple)), key, f"expected a list, got {type(value).__name__}")
        (item,) = typing.get_args(hint)
        return [_coerce(v, item, key) for v in value]
    if hint is bool:
        _check(isinstance(value, bool), key, f"expected true/false, got {value!r}")
        return value
    if hint is int:
        number = _number(value)
        _check(number is not None and float(number).is_integer(), key, f"expected an integer, got {value!r}")
        return int(number)  # type: ignore[arg-type]
    if hint is float:
        number = _number(value)
        _check(number is not None, key, f"expected a number, got {value!r}")
        _check(math.isfinite(number), key, f"must be a finite number, got {value!r}")  # type: ignore[arg-type]
        return float(number)  # type: ignore[arg-type]
    if hint is str:
        _check(isinstance(value, str), key, f"expected a string, got {value!r}")
        return value
    raise ConfigError(f"config '{key}': unsupported type {hint}")


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> DealConfig:
    """Load a YAML config: a plain tree, or a ROS 2 parameter file (first `ros__parameters` found).

    Dotted keys (``loss.deal.weight: 0.5``, legal in ROS 2 parameter files) are honoured in both; a key
    that is neither a config section nor one of the nodes' own parameters is refused, naming it.
    """
    import yaml

    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config file {path} is a folder; give a YAML file")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {' '.join(str(exc).split())}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    try:
        data = _strip_ros_parameters(data)
        cfg = DealConfig.from_dict(_nest_dotted(data, ""))
        return cfg.updated(overrides) if overrides else cfg
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _nest_dotted(data: Any, prefix: str) -> Any:
    """{'loss.deal.weight': 0.5, 'loss': {'deal': {'mu': 2}}} -> one nested tree (ROS 2 parameter files allow both)."""
    if not isinstance(data, dict):
        return data
    tree: dict[str, Any] = {}
    for key, value in data.items():
        key = str(key)
        *parents, leaf = key.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
            _check(isinstance(node, dict), prefix + key, f"'{part}' is both a value and a section")
        value = _nest_dotted(value, prefix + key + ".")
        if isinstance(node.get(leaf), dict) and isinstance(value, dict):
            _merge_new(node[leaf], value)
        else:
            _check(leaf not in node, prefix + key, "given twice")
            node[leaf] = value
    return tree


def _merge_new(node: dict[str, Any], value: dict[str, Any]) -> None:
    for name, item in value.items():
        if isinstance(node.get(name), dict) and isinstance(item, dict):
            _merge_new(node[name], item)
        else:
            node[name] = item


ROS_STANDARD_PARAMETERS = ("use_sim_time", "qos_overrides", "start_type_description_service")
"""Parameters every ROS 2 node may have in its parameter file (not ours, not config)."""


def _node_parameter_sections() -> set[str]:
    """Top-level names of the nodes' own parameters (rgb_topic, qos, sync, ...): allowed beside the config."""
    from deal_ros.online.parameters import NODE_PARAMS  # rclpy-free spec table

    return {spec.name.split(".")[0] for spec in NODE_PARAMS} | set(ROS_STANDARD_PARAMETERS)


def _strip_ros_parameters(data: Any) -> Any:
    """Return the DealConfig subtree of a ROS 2 parameter file, or `data` unchanged.

    The nodes' own parameters are dropped; any other key that is not a config section (a misspelled
    'trian', a dotted 'los.deal.weight') is refused instead of silently leaving the defaults in place.
    """
    if not isinstance(data, dict):
        return data
    for node_name, node_params in data.items():
        if isinstance(node_params, dict) and "ros__parameters" in node_params:
            params = node_params["ros__parameters"] or {}
            _check(isinstance(params, dict), f"{node_name}.ros__parameters", "expected a mapping")
            known = {f.name for f in dataclasses.fields(DealConfig)}
            node_keys = _node_parameter_sections()
            kept: dict[str, Any] = {}
            for key, value in params.items():
                section = str(key).split(".")[0]
                if section in known:
                    kept[str(key)] = value
                    continue
                _check(section in node_keys, f"{node_name}.ros__parameters.{key}",
                       f"unknown key: neither a config section {sorted(known)} nor a node parameter")
            return kept
    return data
