"""ISL: the importance-sampling classification loss (Jonnarth et al.).

Per (image, class), pixels are drawn from the CAM's own probability mass function
p ~ sigmoid(s) + eps (normalised over the map) and the multi-label loss is applied to the logits
at the drawn pixels. Compared with global average pooling this rewards CAMs whose mass, not just
mean, sits on the object, and pushes negative evidence everywhere the map is high.

It is a *classification* loss: untagged classes get a gradient (pushed down), exactly like L_gap.
The trainer mixes it as L_cls = (1 - w) L_gap + w L_isl (w = 0.2).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from deal_ros.losses.common import check_cam_and_tags


def importance_sampling_loss(cam_logits: torch.Tensor, tags: torch.Tensor, num_samples: int = 10, eps: float = 1e-5,
                             generator: torch.Generator | None = None) -> torch.Tensor:
    """Mean BCE-with-logits of (B, K, num_samples) sampled CAM logits against the (B, K) tags.

    The sampling itself carries no gradient (as in the paper); the sampled logits do.
    """
    check_cam_and_tags(cam_logits, tags, "ISL")
    b, k = cam_logits.shape[:2]
    logits = cam_logits.float().reshape(b * k, -1)
    with torch.no_grad():
        pmf = torch.sigmoid(logits) + eps  # multinomial normalises each row
        index = torch.multinomial(pmf, num_samples, replacement=True, generator=generator)
    sampled = logits.gather(1, index).view(b, k, num_samples)
    target = tags.to(sampled)[:, :, None].expand_as(sampled)
    return F.binary_cross_entropy_with_logits(sampled, target)


class ISLLoss(nn.Module):
    """Module form of :func:`importance_sampling_loss`; context is ignored (``generator`` is used if given)."""

    def __init__(self, num_samples: int = 10, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_samples, self.eps = num_samples, eps

    def forward(self, cam_logits: torch.Tensor, depth_m: torch.Tensor | None, tags: torch.Tensor,
                **context: Any) -> torch.Tensor:
        return importance_sampling_loss(cam_logits, tags, self.num_samples, self.eps, context.get("generator"))

    def extra_repr(self) -> str:
        return f"num_samples={self.num_samples}, eps={self.eps}"
