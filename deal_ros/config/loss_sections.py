"""The loss sections of the schema (``loss.*``): DEAL, the structure losses and the objective's weights.

Declared as every section is (deal_ros.config.fields.setting); deal_ros.config.schema puts LossConfig in the root.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from deal_ros.config.fields import Section, check, setting

GridStride = Literal[1, 2, 4, 8, 16]
"""Stride of a loss grid relative to the network input."""
EdgeOperator = Literal["sobel", "plane_sobel", "laplacian"]
"""Depth edge operators of deal_ros.depth.maps.edge_strength."""
EdgeNorm = Literal["max", "percentile", "fixed"]
"""Depth edge normalisations of deal_ros.depth.maps.normalize_depth_edges."""
HoleFill = Literal["row_far", "far", "pyramid", "none"]
"""Hole fillings of deal_ros.depth.maps.fill_holes."""
DealRegion = Literal["everywhere", "objects"]
"""Where DEAL counts (deal_ros.training.objective.deal_cells)."""


ENABLED_DOC = "Switch this loss term on."
WEIGHT_DOC = "Weight of this loss term in the total loss."


@dataclass
class DealLossConfig(Section):
    """Depth Edge Alignment Loss settings: the paper's depth-edge map and this package's robust one ('ours').

    The defaults of :func:`deal_ros.losses.deal_loss` and :class:`~deal_ros.losses.DEALLoss` are these (the
    robust depth-edge map); ``DEAL_PRESETS`` are overrides of them.
    """

    enabled: bool = setting(
        False, """Add the depth-edge alignment loss. Off by default: next to the depth prior it lowers the
        close-ups' masks (README, Label quality). Turn it on with region 'objects' for bins, shelves and table
        clutter; everywhere for real tabletop bags and scenes without a support surface.""", runtime=True)
    weight: float = setting(1.0, "lambda: L = L_cls + lambda * L_DEAL.", ge=0, runtime=True)
    region: DealRegion = setting(
        "everywhere", """Where the CAM's edges must follow depth edges: 'everywhere' (paper) or 'objects' (what the
        depth prior says stands out, grown by one loss cell so its outline counts; the whole frame where no surface
        is found, where depth edges are the only depth cue).""",
        runtime=True)
    warmup_steps: int = setting(
        100, "lambda ramps linearly from 0 to `weight` over these steps (a flat CAM scores well under DEAL).",
        ge=0, le=1_000_000, runtime=True)
    mu: float = setting(
        2.5, "Soft-binarisation sharpness; an edge is anything above sigmoid(-mu) = 7.6 % of the scale.",
        ge=0.01, le=100, runtime=True)
    grid_stride: GridStride = setting(
        4, "Loss grid stride relative to the network input (the CAM is upsampled to it).", runtime=True)
    edge_operator: EdgeOperator = setting(
        "plane_sobel", "Depth edge operator: 'sobel' (paper), 'plane_sobel' (Sobel minus local-plane gradient), "
        "'laplacian'.", runtime=True)
    log_depth: bool = setting(
        True, "Take edges of log-depth (relative jumps) instead of metric depth (paper: False).", runtime=True)
    edge_norm: EdgeNorm = setting(
        "fixed", "Depth edge normalisation: 'max' (paper, per image), 'percentile', 'fixed' (threshold in units).",
        runtime=True)
    edge_threshold: float = setting(
        0.0125, """For edge_norm='fixed': the jump across a cell that counts as an edge, in log-depth units (a
        relative step: 0.0125 = 1.25 %) or metres. Our Sobel is scaled by 1/4 so a step of t reads as t (the same
        threshold is 0.05 on the unscaled Sobel).""", gt=0, runtime=True)
    edge_percentile: float = setting(
        99.0, "For edge_norm='percentile': the percentile of valid edge strengths used as the scale.",
        gt=0, le=100, runtime=True)
    plane_window: int = setting(
        7, "For plane_sobel: window (cells) of the median that estimates the local plane gradient.", ge=3,
        runtime=True)
    hole_fill: HoleFill = setting(
        "row_far", "Hole filling: 'row_far' (farther row neighbour), 'far' (farthest of row/column), 'pyramid', "
        "'none'.", runtime=True)
    hole_exclude_window: int = setting(
        5, "Cells whose window x window neighbourhood is all hole are excluded (0 = exclude every hole).", ge=0,
        runtime=True)
    cam_norm: Literal["minmax", "max"] = setting(
        "minmax", "CAM normalisation before edges: 'minmax' (ReLU + per-map min-max, from SEAM) or 'max'.",
        runtime=True)

    def check_relations(self) -> None:
        check(self.plane_window % 2 == 1, "loss.deal.plane_window", "must be odd >= 3")

    def loss_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :func:`deal_ros.losses.deal_loss` / :class:`DEALLoss`."""
        skip = {"enabled", "weight", "warmup_steps", "region"}
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip}


@dataclass
class ISLConfig(Section):
    """Importance-sampling loss (Jonnarth et al.): L_cls = (1 - weight) L_gap + weight L_isl."""

    enabled: bool = setting(False, ENABLED_DOC)
    weight: float = setting(
        0.2, "Mixing weight of L_isl into the classification loss (paper: 0.2, i.e. 0.8 L_gap + 0.2 L_isl).",
        ge=0, le=1)
    num_samples: int = setting(
        10, "Pixels sampled per (image, class) from the CAM's pmf sigmoid(s) + eps, normalised.", ge=1, le=10000)
    eps: float = setting(1e-5, "Added to sigmoid(s) so that no pixel has zero probability.", gt=0)


@dataclass
class FSLConfig(Section):
    """Feature-similarity loss (Jonnarth et al.), local-window form: L += weight * L_fsl."""

    enabled: bool = setting(False, ENABLED_DOC)
    weight: float = setting(1.0, WEIGHT_DOC, ge=0)
    mu: float = setting(
        2.5, "Soft-binarisation of the colour distance: pairs closer than sigmoid(-mu) (7.6 %) count as similar.",
        gt=0)
    sigma: float = setting(5.0, "Gaussian pixel-distance weight, in CAM-grid cells.", gt=0)
    radius: int = setting(
        10, "Only pairs within this distance (cells) are used: memory O(h * w * radius^2), not O((h w)^2).",
        ge=1, le=64)


@dataclass
class SmoothnessConfig(Section):
    """Boundary-guided Charbonnier smoothness of the CAM (structure-aware WSSS, Liu et al. 2021)."""

    enabled: bool = setting(False, ENABLED_DOC)
    weight: float = setting(1.0, WEIGHT_DOC, ge=0)
    source: Literal["depth", "pseudo_label", "learned"] = setting(
        "depth", """Boundary map S: 'depth' (depth edges), 'pseudo_label' (current pseudo-label boundaries) or
        'learned' (the boundary branch; needs loss.boundary.enabled).""")
    alpha: float = setting(10.0, "Edge-stopping strength: pair weight exp(-alpha |grad S|).", ge=0)
    first_order_weight: float = setting(
        1.0, "Weight of the first-order term (the paper's text: 1 with 10x second order; its code: 10:1 the other "
        "way).", ge=0)
    second_order_weight: float = setting(0.1, "Weight of the second-order term.", ge=0)
    guide: Literal["gradient", "edge"] = setting(
        "gradient", "'gradient': exp(-alpha |S_i - S_j|) per pair (the paper); 'edge': exp(-alpha max(S_i, S_j)) "
        "(S as edge map).")
    grid_stride: GridStride = setting(4, "Loss grid stride relative to the network input (the CAM is upsampled to it).")


@dataclass
class BoundaryConfig(Section):
    """Semantic boundary branch (training only) with BCE against pseudo-label boundaries (structure-aware WSSS)."""

    enabled: bool = setting(False, ENABLED_DOC)
    weight: float = setting(0.02, "BCE weight (paper range 0.01-0.05).", ge=0)
    canny_low: float = setting(10.0, "Canny hysteresis thresholds on the 8-bit grey image (paper: 10 / 100).", ge=0)
    canny_high: float = setting(100.0, "Upper Canny hysteresis threshold on the 8-bit grey image.")
    depth_edges: bool = setting(False, "Also feed Canny edges of the (hole-filled, log) depth to the fusion.")
    detach_features: bool = setting(
        False, "Stop the BCE gradient at the backbone features (False = multi-task, as in the paper).")

    def check_relations(self) -> None:
        check(self.canny_low <= self.canny_high, "loss.boundary.canny_low/high", "need 0 <= low <= high")


@dataclass
class SSCConfig(Section):
    """SSC activation self-modulation: pull the CAM towards max(CAM, superpixel-pooled CAM) (SSC, Chen et al.)."""

    enabled: bool = setting(False, ENABLED_DOC)
    weight: float = setting(1.0, WEIGHT_DOC, ge=0)
    start_step: int = setting(
        50, "The term is off for the first start_step training steps (CAMs must be meaningful first).", ge=0)
    n_segments: int = setting(64, "Approximate number of SLIC superpixels per image (on the loss grid).", ge=2)
    compactness: float = setting(10.0, "SLIC compactness (colour vs space trade-off).", gt=0)
    use_depth: bool = setting(
        False, "Depth-aware superpixels: SLIC on Lab + scaled log-depth as a 4th channel (ours).")
    depth_scale: float = setting(
        100.0, "Lab units per unit of log-depth in the depth channel (100: a 10 % depth step = 10 Lab units).", ge=0)
    confidence: float = setting(
        0.3, "The term acts where the max-normalised CAM exceeds this after erosion.", ge=0, lt=1)
    erosion_px: int = setting(
        8, "Erosion window in input pixels (8 in the paper), converted to loss-grid cells.", ge=1)
    grid_stride: GridStride = setting(4, "Loss grid stride relative to the network input.")


@dataclass
class ReconstructionConfig(Section):
    """SSC CAM-driven reconstruction: a small decoder rebuilds the image from the CAMs (SSC, Chen et al.)."""

    enabled: bool = setting(False, ENABLED_DOC)
    weight: float = setting(1.0, WEIGHT_DOC, ge=0)
    perceptual_weight: float = setting(
        1.0, "Weight of the perceptual term (L1 of frozen-backbone features; no VGG weights exist here).", ge=0)
    l1_weight: float = setting(1.0, "Weight of the pixel L1 term.", ge=0)
    hidden_channels: int = setting(32, "Width of the decoder.", ge=4)
    out_stride: Literal[1, 2, 4, 8] = setting(
        4, "The image is reconstructed (and compared) at this stride of the input: cheap, still structural.")


@dataclass
class LossConfig(Section):
    """The training objective: L_cls + lambda * L_DEAL + seg_weight * CE(seg, pseudo-labels) + structure losses."""

    deal: DealLossConfig = field(default_factory=DealLossConfig)
    isl: ISLConfig = field(default_factory=ISLConfig)
    fsl: FSLConfig = field(default_factory=FSLConfig)
    smoothness: SmoothnessConfig = field(default_factory=SmoothnessConfig)
    boundary: BoundaryConfig = field(default_factory=BoundaryConfig)
    ssc: SSCConfig = field(default_factory=SSCConfig)
    recon: ReconstructionConfig = field(default_factory=ReconstructionConfig)
    seg_weight: float = setting(
        1.0, "Weight of the segmentation head's cross-entropy on pseudo-labels.", ge=0, le=100, runtime=True)
    seg_label_size: Literal["input", "logits"] = setting(
        "input", """Size at which the segmentation head meets its pseudo-labels: 'input' makes the labels at the
        network's input size and upsamples the head's logits (bilinear) to it, so object borders and small parts
        are learnt at full resolution; 'logits' makes them at the head's stride (cheaper, coarser).""")
    seg_warmup_steps: int = setting(
        30, "The segmentation head trains only after this many steps (CAMs must tell the classes apart first).",
        ge=0, runtime=True)
    support_weight: float = setting(
        0.0, """Weight of the support-plane loss: mean softplus of every class's CAM logit on pixels that lie on or
        behind the support plane (pseudo_label.support_tolerance), so the classifier cannot use the table as
        evidence.""", ge=0)

    def check_relations(self) -> None:
        check(not (self.smoothness.enabled and self.smoothness.source == "learned" and not self.boundary.enabled),
               "loss.smoothness.source", "'learned' needs the boundary branch (loss.boundary.enabled: true)")
