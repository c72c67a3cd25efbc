"""Joint augmentation of RGB, depth and (optional) labels: flip, scale, crop/pad, colour jitter.

Geometry is shared by all inputs; RGB is resampled bilinearly, depth and labels with nearest so that
holes (0) and class ids never blend. Padding uses 0 for RGB, 0 (= hole) for depth and 255 (= ignore)
for labels. Runs batched on the tensors' device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from deal_ros.config import IGNORE_INDEX, AugmentConfig


def _fit(x: torch.Tensor, size: tuple[int, int], top: int, left: int, fill: float) -> torch.Tensor:
    """Crop (or pad with `fill`) x: (C, h, w) to size at offset (top, left) of the larger extent."""
    height, width = size
    pad_h, pad_w = max(0, height - x.shape[-2]), max(0, width - x.shape[-1])
    if pad_h or pad_w:
        x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2), value=fill)
    return x[..., top: top + height, left: left + width]


def augment_batch(
    rgb: torch.Tensor,
    depth_m: torch.Tensor,
    cfg: AugmentConfig,
    generator: torch.Generator,
    labels: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """rgb (B, 3, H, W) float 0..255, depth_m (B, 1, H, W), labels (B, H, W) int -> same shapes, augmented.

    `generator` is a CPU torch.Generator, so the same seed gives the same augmentation on any device.
    """
    batch, _, height, width = rgb.shape
    out_rgb, out_depth, out_labels = [], [], []
    for i in range(batch):
        u = torch.rand(5, generator=generator).tolist()
        scale = cfg.scale_min + (cfg.scale_max - cfg.scale_min) * u[0]
        size = (max(8, round(height * scale)), max(8, round(width * scale)))
        x = F.interpolate(rgb[i: i + 1], size=size, mode="bilinear", align_corners=False)[0]
        d = F.interpolate(depth_m[i: i + 1], size=size, mode="nearest-exact")[0]
        top = int(u[1] * (max(size[0], height) - height + 1))
        left = int(u[2] * (max(size[1], width) - width + 1))
        x, d = _fit(x, (height, width), top, left, 0.0), _fit(d, (height, width), top, left, 0.0)
        flip = cfg.hflip and u[3] < 0.5
        if flip:
            x, d = x.flip(-1), d.flip(-1)
        if cfg.color_jitter > 0:
            gain = 1.0 + cfg.color_jitter * (2 * u[4] - 1)
            x = ((x - x.mean()) * gain + x.mean() * (2.0 - gain)).clamp(0.0, 255.0)
        out_rgb.append(x)
        out_depth.append(d)
        if labels is not None:
            lab = F.interpolate(labels[i: i + 1, None].float(), size=size, mode="nearest-exact")[0]
            lab = _fit(lab, (height, width), top, left, float(IGNORE_INDEX))
            out_labels.append((lab.flip(-1) if flip else lab)[0].long())
    return (torch.stack(out_rgb), torch.stack(out_depth),
            torch.stack(out_labels) if labels is not None else None)
