"""SSC, spatial structure constraints (Chen et al.): two training-time losses.

(a) :class:`SSCLoss`, activation self-modulation. The max-normalised CAM of each tagged class is
averaged inside SLIC superpixels (RGB, or RGB + depth as an extra channel: ours), the pooled map is
max-normalised, and the CAM is pulled (MSE) towards the element-wise max of itself and the pooled map,
where the CAM is confident (> 0.3 after an 8x8-pixel erosion). The target is detached: the CAM spreads
over the superpixels it already covers confidently. Off for the first ``start_step`` steps.

(b) :class:`ReconstructionLoss`, CAM-driven reconstruction. A small decoder rebuilds the image (at
stride ``out_stride``) from the tagged classes' max-normalised CAMs; loss = L1 + perceptual. The paper's
perceptual network is VGG-19 (relu1_1..relu5_1, weights 1/32..1). No VGG weights exist here, so the
perceptual features come from a **frozen copy of the CAM network's own backbone** taken when the trainer
starts (the ImageNet weights when given, else its random init: random conv features still measure
structure), at its three levels (strides 4, 8, final; weights 1/4, 1/2, 1). Why a frozen copy and not
the live backbone under no_grad: the gradient must flow through the perceptual network into the
reconstruction, and through the live backbone that would also reach (or, with its weights detached, keep
chasing) a moving target, and a shared backbone could lower the loss by becoming insensitive to its input.
A frozen copy is a fixed metric, as VGG is; it costs one backbone's weights (~9 MB for MobileNetV2) and
two small forwards at stride 4 (the image is compared at H/4 x W/4).
Both terms give untagged classes exactly zero gradient (they are masked out of the decoder's input).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from deal_ros.depth.maps import fill_holes, valid_depth
from deal_ros.errors import UserError
from deal_ros.losses.common import (
    check_cam_and_tags,
    grid_size,
    max_norm_cam,
    require,
    spatial_size,
    tagged_mask,
    zero_loss,
)

if TYPE_CHECKING:
    from deal_ros.models.backbone import Backbone


@torch.no_grad()
def superpixels(rgb: torch.Tensor, size: tuple[int, int], n_segments: int = 64, compactness: float = 10.0,
                depth_m: torch.Tensor | None = None, depth_scale: float = 100.0) -> torch.Tensor:
    """SLIC on the image resampled to `size`: rgb (B, 3, H, W) in [0, 1] -> segment ids (B, *size) int64.

    Ids are made unique over the batch (image b's ids are offset), so one scatter pools all images.
    With depth_m, SLIC runs on Lab + depth_scale * log-depth (holes filled from the far side).
    """
    try:  # the lab extra's: the robot's install (pip install .) has no scikit-image, and SSC is off by default
        from skimage.color import rgb2lab
        from skimage.segmentation import slic
    except ImportError:
        raise UserError("loss.ssc needs scikit-image: pip install 'deal_ros[lab]' (or turn loss.ssc off)") from None
    small = F.interpolate(rgb.detach().float(), size=size, mode="bilinear", align_corners=False, antialias=True)
    images = small.clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy().astype(np.float64)
    extra = None
    if depth_m is not None:
        depth = torch.nan_to_num(depth_m.detach().float(), nan=0.0)
        filled = fill_holes(depth.abs(), valid_depth(depth), "row_far")
        z = torch.log(F.interpolate(filled, size=size, mode="area").clamp_min(1e-3))
        extra = (depth_scale * (z - z.mean(dim=(-2, -1), keepdim=True)))[:, 0].cpu().numpy().astype(np.float64)
    out, offset = [], 0
    for b, image in enumerate(images):
        if extra is None:
            seg = slic(image, n_segments=n_segments, compactness=compactness, start_label=0, channel_axis=-1)
        else:
            stacked = np.concatenate([rgb2lab(image), extra[b][..., None]], axis=-1)
            seg = slic(stacked, n_segments=n_segments, compactness=compactness, start_label=0, channel_axis=-1,
                       convert2lab=False)
        out.append(seg.astype(np.int64) + offset)
        offset += int(seg.max()) + 1
    return torch.from_numpy(np.stack(out)).to(rgb.device)


def superpixel_mean(values: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
    """Average (B, C, h, w) inside each segment (B, h, w) with batch-unique ids -> (B, C, h, w)."""
    b, c, h, w = values.shape
    ids = segments.reshape(b, 1, h * w).expand(b, c, h * w)
    ids = ids + (torch.arange(c, device=values.device) * (int(segments.max()) + 1)).view(1, c, 1)
    flat_ids, flat = ids.reshape(-1), values.reshape(-1)
    n = int(flat_ids.max()) + 1
    sums = torch.zeros(n, device=values.device, dtype=values.dtype).index_add_(0, flat_ids, flat)
    counts = torch.zeros(n, device=values.device, dtype=values.dtype).index_add_(0, flat_ids, torch.ones_like(flat))
    return (sums / counts.clamp_min(1))[flat_ids].view(b, c, h, w)


def erode(mask: torch.Tensor, kernel: int) -> torch.Tensor:
    """Binary erosion of (B, C, h, w) bool by a kernel x kernel square (even sizes allowed); outside = False."""
    if kernel <= 1:
        return mask
    lo, hi = (kernel - 1) // 2, kernel // 2
    padded = F.pad((~mask).float(), (lo, hi, lo, hi), value=1.0)
    return F.max_pool2d(padded, kernel, stride=1) == 0


def self_modulation_loss(cam_logits: torch.Tensor, tags: torch.Tensor, segments: torch.Tensor,
                         confidence: float = 0.3, erosion_cells: int = 2) -> torch.Tensor:
    """MSE between the max-normalised CAM (resized to segments' grid (B, h, w)) and max(CAM, pooled CAM),
    over tagged classes where the eroded CAM > confidence; 0 when no such cell exists."""
    check_cam_and_tags(cam_logits, tags, "SSC")
    cam = max_norm_cam(cam_logits, spatial_size(segments))
    with torch.no_grad():
        pooled = superpixel_mean(cam.detach(), segments)
        pooled = pooled / pooled.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-5)
        target = torch.maximum(cam.detach(), pooled)
        mask = erode(cam.detach() > confidence, erosion_cells) & tagged_mask(tags, cam)
    if not bool(mask.any()):
        return zero_loss(cam_logits)
    return (cam - target).pow(2).masked_fill(~mask, 0.0).sum() / mask.sum()


class SSCLoss(nn.Module):
    """Activation self-modulation (SSC a); context: ``rgb`` (B, 3, H, W) in [0, 1], ``step``."""

    def __init__(self, start_step: int = 50, n_segments: int = 64, compactness: float = 10.0,
                 use_depth: bool = False, depth_scale: float = 100.0, confidence: float = 0.3,
                 erosion_px: int = 8, grid_stride: int = 4) -> None:
        super().__init__()
        self.start_step, self.n_segments, self.compactness = start_step, n_segments, compactness
        self.use_depth, self.depth_scale, self.confidence = use_depth, depth_scale, confidence
        self.erosion_cells = max(1, round(erosion_px / grid_stride))
        self.grid_stride = grid_stride

    def forward(self, cam_logits: torch.Tensor, depth_m: torch.Tensor | None, tags: torch.Tensor,
                **context: Any) -> torch.Tensor:
        check_cam_and_tags(cam_logits, tags, "SSC")
        if int(context.get("step", self.start_step)) < self.start_step or not bool(tags.any()):
            return zero_loss(cam_logits)
        rgb: torch.Tensor = require(context, "rgb", "SSC")
        size = grid_size(*spatial_size(rgb), self.grid_stride)
        segments = superpixels(rgb, size, self.n_segments, self.compactness,
                               depth_m if self.use_depth else None, self.depth_scale).to(cam_logits.device)
        return self_modulation_loss(cam_logits, tags, segments, self.confidence, self.erosion_cells)

    def extra_repr(self) -> str:
        return (f"start_step={self.start_step}, n_segments={self.n_segments}, use_depth={self.use_depth}, "
                f"erosion_cells={self.erosion_cells}")


class CAMDecoder(nn.Module):
    """(B, K, h, w) CAMs -> (B, 3, h * up, w * up) RGB in [0, 1]: conv blocks with x2 bilinear upsampling."""

    def __init__(self, num_classes: int, hidden: int = 32, upsample: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(num_classes, hidden, 3, padding=1), nn.ReLU(inplace=True)]
        steps = max(1, upsample).bit_length() - 1  # log2 of a power of two
        for _ in range(steps):
            layers += [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                       nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU(inplace=True)]
        layers += [nn.Conv2d(hidden, 3, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, cam: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(cam))


class ReconstructionLoss(nn.Module):
    """CAM-driven reconstruction (SSC b): L1 + perceptual on a frozen backbone copy. Context: ``rgb`` in [0, 1].

    perceptual_net: a feature backbone with ``forward_features(x) -> [stride 4, stride 8, final]`` (deep-copied
    and frozen here); normalize: rgb 0..255 -> its input. None disables the perceptual term.
    """

    build_options: dict[str, Any]
    """Set by StructureLosses: the options it was built with (it is reused while they stay equal)."""

    def __init__(self, num_classes: int, cam_stride: int, perceptual_net: Backbone | None = None,
                 normalize: Callable[[torch.Tensor], torch.Tensor] | None = None, hidden_channels: int = 32,
                 out_stride: int = 4, l1_weight: float = 1.0, perceptual_weight: float = 1.0,
                 level_weights: Sequence[float] = (0.25, 0.5, 1.0)) -> None:
        super().__init__()
        self.out_stride, self.l1_weight, self.perceptual_weight = out_stride, l1_weight, perceptual_weight
        self.level_weights = tuple(level_weights)
        self.decoder = CAMDecoder(num_classes, hidden_channels, max(1, cam_stride // out_stride))
        self.perceptual_net: Backbone | None = None
        if perceptual_net is not None and perceptual_weight > 0:
            self.perceptual_net = copy.deepcopy(perceptual_net).eval()
            for p in self.perceptual_net.parameters():
                p.requires_grad_(False)
        self.normalize = normalize or (lambda rgb255: rgb255 / 128.0 - 1.0)

    def train(self, mode: bool = True) -> ReconstructionLoss:
        """The frozen perceptual network stays in eval mode (its BN statistics must not move)."""
        super().train(mode)
        if self.perceptual_net is not None:
            self.perceptual_net.eval()
        return self

    def _features(self, rgb01: torch.Tensor) -> list[torch.Tensor]:
        assert self.perceptual_net is not None  # called only with the perceptual term on
        return self.perceptual_net.forward_features(self.normalize(rgb01 * 255.0))

    def forward(self, cam_logits: torch.Tensor, depth_m: torch.Tensor | None, tags: torch.Tensor,
                **context: Any) -> torch.Tensor:
        check_cam_and_tags(cam_logits, tags, "reconstruction")
        rgb: torch.Tensor = require(context, "rgb", "reconstruction").float()
        size = grid_size(*spatial_size(rgb), self.out_stride)
        cam = max_norm_cam(cam_logits)
        cam = cam.masked_fill(~tagged_mask(tags, cam), 0.0)
        recon = self.decoder(cam)
        if tuple(recon.shape[-2:]) != size:
            recon = F.interpolate(recon, size=size, mode="bilinear", align_corners=False)
        target = F.interpolate(rgb, size=size, mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
        loss = self.l1_weight * (recon - target).abs().mean()
        if self.perceptual_net is not None:
            with torch.no_grad():
                target_feats = self._features(target)
            for weight, a, b in zip(self.level_weights, self._features(recon), target_feats, strict=False):
                loss = loss + self.perceptual_weight * weight * (a - b).abs().mean()
        return loss

    def extra_repr(self) -> str:
        return f"out_stride={self.out_stride}, l1={self.l1_weight}, perceptual={self.perceptual_weight}"
