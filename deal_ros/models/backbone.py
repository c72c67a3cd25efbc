"""What a feature backbone provides (MobileNetV2, ResNet): the interface CAMNet and the structure losses use."""

from __future__ import annotations

from torch import Tensor, nn


class Backbone(nn.Module):
    """A feature backbone (no classifier needed): ``forward_features(x) -> [stride 4, stride 8, final]``, their
    ``out_channels``, ``output_stride`` (the final one's stride) and ``stages()`` (5 lists of modules, stem first,
    for freezing). Any module with these members works (the tests use small ones)."""

    out_channels: tuple[int, int, int]
    output_stride: int

    def forward_features(self, x: Tensor) -> list[Tensor]:
        raise NotImplementedError

    def stages(self) -> list[list[nn.Module]]:
        raise NotImplementedError
