"""ResNet-18 / ResNet-50 with torchvision parameter names and DeepLab-style dilation.

Why it is written here: torchvision is unavailable, and users must still load torchvision/timm
ImageNet weights from a local file, so the module tree mirrors ``torchvision.models.resnet``
(``conv1``, ``bn1``, ``layer1..layer4`` with ``conv{1,2,3}``/``bn{1,2,3}``/``downsample.{0,1}``, ``fc``).

``output_stride`` 8/16 follows torchvision's ``replace_stride_with_dilation``: OS16 dilates
layer4, OS8 dilates layer3 and layer4; the first block of a dilated layer keeps the previous
dilation on its (formerly) strided conv and the new dilation on everything after it. The dense
network is then an exact densification of the OS32 one: its final map sampled every 32/os pixels
equals the OS32 map (tested). Unlike torchvision, BasicBlock (ResNet-18) supports dilation, since
we need OS 8/16 for it; its second conv uses the new dilation (torchvision's rule of giving the
whole first block the previous dilation would break the equivalence there).

Stages (for ``freeze_stages``; stage 0 = stem):
    0: conv1 + bn1 (+ maxpool, no parameters)  stride 4
    1: layer1  stride 4   -> low-level feature  (64 ch R18, 256 ch R50)
    2: layer2  stride 8   -> mid-level feature  (128 / 512 ch)
    3: layer3  stride 16 (or 8)
    4: layer4  stride 32, 16 or 8 -> final feature (512 / 2048 ch)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .backbone import Backbone


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, stride, padding=dilation, dilation=dilation, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs; ``dilation`` on the first (strided) one, ``next_dilation`` on the second."""

    expansion = 1

    def __init__(
        self,
        in_ch: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        dilation: int = 1,
        next_dilation: int | None = None,
    ) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_ch, planes, stride, dilation)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes, 1, dilation if next_dilation is None else next_dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck (stride on the 3x3 conv), as torchvision; only that conv is dilated."""

    expansion = 4

    def __init__(
        self,
        in_ch: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        dilation: int = 1,
        next_dilation: int | None = None,  # unused: only 1x1 convs follow the 3x3
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(Backbone):
    """ResNet (torchvision layout). ``num_classes=None`` builds a feature backbone without ``fc``.

    Args:
        block: BasicBlock (ResNet-18/34) or Bottleneck (ResNet-50+).
        layers: blocks per layer, e.g. (2, 2, 2, 2).
        num_classes: size of ``fc`` (1000 for torchvision ImageNet weights), None for none.
        output_stride: 8, 16 or 32 (native).
    """

    out_channels: tuple[int, int, int]

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: tuple[int, int, int, int],
        num_classes: int | None = None,
        output_stride: int = 32,
    ) -> None:
        super().__init__()
        dilate = {32: (False, False, False), 16: (False, False, True), 8: (False, True, True)}.get(output_stride)
        if dilate is None:
            raise ValueError(f"ResNet output_stride must be 8, 16 or 32, got {output_stride}")
        self.output_stride = output_stride
        e = block.expansion
        self.out_channels = (64 * e, 128 * e, 512 * e)
        self._in_ch = 64
        self._dilation = 1

        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], 2, dilate[0])
        self.layer3 = self._make_layer(block, 256, layers[2], 2, dilate[1])
        self.layer4 = self._make_layer(block, 512, layers[3], 2, dilate[2])
        if num_classes is not None:
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(512 * e, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        planes: int,
        blocks: int,
        stride: int = 1,
        dilate: bool = False,
    ) -> nn.Sequential:
        previous_dilation = self._dilation
        if dilate:
            self._dilation *= stride
            stride = 1
        downsample = None
        if stride != 1 or self._in_ch != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self._in_ch, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self._in_ch, planes, stride, downsample, previous_dilation, self._dilation)]
        self._in_ch = planes * block.expansion
        layers += [block(self._in_ch, planes, dilation=self._dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def stages(self) -> list[list[nn.Module]]:
        """The five stages (see the module docstring), stem first, for freezing."""
        return [[self.conv1, self.bn1], [self.layer1], [self.layer2], [self.layer3], [self.layer4]]

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """(B,3,H,W) -> [layer1 (B,C4,H/4,W/4), layer2 (B,C8,H/8,W/8), layer4 (B,Cf,H/os,W/os)]."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c4 = self.layer1(x)
        c8 = self.layer2(c4)
        return [c4, c8, self.layer4(self.layer3(c8))]

    def forward(self, x: Tensor) -> Tensor:
        """(B,3,H,W) -> (B,num_classes) logits with ``fc``, else the final feature map."""
        x = self.forward_features(x)[-1]
        if not hasattr(self, "fc"):
            return x
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(num_classes: int | None = None, output_stride: int = 32) -> ResNet:
    """ResNet-18 (11.7 M parameters with a 1000-way fc)."""
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes, output_stride)


def resnet50(num_classes: int | None = None, output_stride: int = 32) -> ResNet:
    """ResNet-50 v1.5 (25.6 M parameters with a 1000-way fc)."""
    return ResNet(Bottleneck, (3, 4, 6, 3), num_classes, output_stride)
