"""Small differentiable image filters on (B, C, H, W) tensors, shared by the losses and depth code.

Functional and device/dtype-agnostic, in the style of kornia.filters. Padding is 'replicate' so
that a constant map has exactly zero response, including on the border.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Sobel divided by 4: on a step of height t between two cells, the two cells beside the step read
# gx = t (a central difference), so thresholds can be stated in the units of the input.
_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 4.0
_LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def _depthwise(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    channels = x.shape[1]
    weight = kernel.to(device=x.device, dtype=x.dtype).expand(channels, 1, 3, 3)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), weight, groups=channels)


def sobel_xy(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """3x3 Sobel derivatives (gx, gy) of x: (B, C, H, W), replicate padding, scaled by 1/4."""
    return _depthwise(x, _SOBEL_X), _depthwise(x, _SOBEL_X.t())


def gradient_magnitude(gx: torch.Tensor, gy: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """sqrt(gx^2 + gy^2 + eps) - sqrt(eps): finite gradient everywhere and exactly 0 on a flat map."""
    floor = torch.sqrt(torch.tensor(eps, dtype=gx.dtype, device=gx.device))
    return torch.sqrt(gx * gx + gy * gy + eps) - floor


def laplacian(x: torch.Tensor) -> torch.Tensor:
    """4-neighbour Laplacian of x: (B, C, H, W); zero on any plane, so insensitive to tilted surfaces."""
    return _depthwise(x, _LAPLACIAN)


def local_median(x: torch.Tensor, window: int) -> torch.Tensor:
    """Median of each window x window neighbourhood (replicate padding); x: (B, C, H, W)."""
    b, c, h, w = x.shape
    pad = window // 2
    patches = F.unfold(F.pad(x, (pad, pad, pad, pad), mode="replicate").reshape(b * c, 1, h + 2 * pad, w + 2 * pad),
                       kernel_size=window)
    return patches.median(dim=1).values.reshape(b, c, h, w)


def normalize_cam(cam: torch.Tensor, mode: str = "minmax", tau: float = 1e-6) -> torch.Tensor:
    """ReLU then per (image, class) min-max (SEAM) or max normalisation to [0, 1]; cam: (B, K, h, w)."""
    cam = F.relu(cam)
    if mode == "minmax":
        lo = cam.amin(dim=(-2, -1), keepdim=True)
        hi = cam.amax(dim=(-2, -1), keepdim=True)
        return (cam - lo) / (hi - lo).clamp_min(tau)
    if mode == "max":
        return cam / cam.amax(dim=(-2, -1), keepdim=True).clamp_min(tau)
    raise ValueError(f"cam_norm must be 'minmax' or 'max', got {mode!r}")
