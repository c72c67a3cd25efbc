"""MobileNetV2 1.0 with torchvision parameter names, optional TF 'SAME' padding and dilation.

Why it is written here: torchvision is unavailable, and users must still be able to load
torchvision/timm-layout ImageNet weights from a local file. The module tree therefore mirrors
``torchvision.models.mobilenet_v2`` exactly (``features.0.0.weight``, ``features.1.conv.0.0.weight``,
..., ``features.18.1.*``, ``classifier.1.*``), so ``load_state_dict(strict=True)`` accepts its files.

Two additions over torchvision, neither of which changes a state-dict key:

* ``tf_same_padding``: the five stride-2 3x3 convs (``features.0.0``, ``features.{2,4,7,14}.conv.1.0``)
  pad like TensorFlow 'SAME' (the extra row/column goes bottom/right), computed from the input size.
  Weights converted from TF (the built-in ones) need it: with symmetric padding their top-1 agreement
  with TFLite drops from 24/24 to 11/24.
* ``output_stride`` 8 or 16: like DeepLab, once the running stride reaches ``output_stride`` each
  further stride-2 block runs at stride 1 and the depthwise convs after it are dilated (the block
  that lost its stride keeps the previous rate, later blocks get rate x 2), so receptive fields and
  pretrained weights stay valid at a denser output.

Stages (for ``freeze_stages``; stage 0 = stem):
    0: features.0-1   (stride 2, 16 ch)
    1: features.2-3   (stride 4, 24 ch)   -> low-level feature
    2: features.4-6   (stride 8, 32 ch)   -> mid-level feature
    3: features.7-13  (stride 16, 96 ch)
    4: features.14-18 (stride 32 or less, 1280 ch) -> final feature
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backbone import Backbone

# t (expansion), c (out channels), n (repeats), s (stride of the first block): torchvision's table.
_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
_STAGE_SLICES: tuple[tuple[int, int], ...] = ((0, 2), (2, 4), (4, 7), (7, 14), (14, 19))
_FEATURE_TAPS = (3, 6, 18)  # indices of `features` whose outputs are the stride-4, stride-8 and final maps


def tf_same_pad(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """(before, after) padding of TF 'SAME' along one axis; output = ceil(size / stride).

    The odd pixel, if any, goes after (bottom/right), which is what TF-trained weights expect.
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` that pads like TF 'SAME' for the actual input size (same parameters and keys)."""

    def _conv_forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        top, bottom = tf_same_pad(x.shape[-2], self.kernel_size[0], self.stride[0], self.dilation[0])
        left, right = tf_same_pad(x.shape[-1], self.kernel_size[1], self.stride[1], self.dilation[1])
        if top == bottom and left == right:
            return F.conv2d(x, weight, bias, self.stride, (top, left), self.dilation, self.groups)
        x = F.pad(x, (left, right, top, bottom))
        return F.conv2d(x, weight, bias, self.stride, 0, self.dilation, self.groups)


def conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d, x: Tensor) -> Tensor:
    """``bn(conv(x))``; a BatchNorm in eval mode (frozen, or at inference) is folded into the conv instead.

    Why: eval-mode BN is a per-channel affine map, so conv(x, W * s) + (beta - mean * s) with
    s = gamma / sqrt(var + eps) is the same function (to float rounding) with the same gradients for
    every parameter, and it saves the BN pass forward and backward (~25 % of a CPU training step).
    """
    if bn.training or bn.running_mean is None or bn.running_var is None:
        return bn(conv(x))
    scale = torch.rsqrt(bn.running_var + bn.eps)
    shift = -bn.running_mean * scale
    if bn.affine:
        scale = scale * bn.weight
        shift = shift * bn.weight + bn.bias
    if conv.bias is not None:
        shift = shift + conv.bias * scale
    return conv._conv_forward(x, conv.weight * scale.view(-1, 1, 1, 1), shift)


class ConvBNReLU6(nn.Sequential):
    """torchvision's ``Conv2dNormActivation``: children 0 = conv, 1 = BatchNorm2d, 2 = ReLU6."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int = 3,
        stride: int = 1,
        groups: int = 1,
        dilation: int = 1,
        tf_same: bool = False,
    ) -> None:
        conv_cls = Conv2dSame if tf_same else nn.Conv2d
        padding = (kernel - 1) // 2 * dilation
        super().__init__(
            conv_cls(in_ch, out_ch, kernel, stride, padding, dilation=dilation, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU6(inplace=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        conv, bn, act = self
        assert isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
        return act(conv_bn(conv, bn, x))


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise 3x3 -> project (1x1, linear); residual when shape is kept.

    ``conv`` children match torchvision: for expand_ratio 1 they are 0 = dw, 1 = project conv, 2 = BN;
    otherwise 0 = expand, 1 = dw, 2 = project conv, 3 = BN.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int,
        expand_ratio: int,
        dilation: int = 1,
        tf_same: bool = False,
    ) -> None:
        super().__init__()
        hidden = in_ch * expand_ratio
        # Residual only where torchvision has one: the dilated (stride-removed) blocks change channels anyway.
        self.use_res_connect = stride == 1 and in_ch == out_ch
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU6(in_ch, hidden, kernel=1))
        layers += [
            ConvBNReLU6(hidden, hidden, 3, stride, groups=hidden, dilation=dilation, tf_same=tf_same),
            nn.Conv2d(hidden, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        *layers, project, bn = self.conv
        y = x
        for layer in layers:
            y = layer(y)
        assert isinstance(project, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
        y = conv_bn(project, bn, y)
        return x + y if self.use_res_connect else y


class MobileNetV2(Backbone):
    """MobileNetV2 1.0 (torchvision layout). ``num_classes=None`` builds a feature backbone only.

    Args:
        num_classes: size of ``classifier`` = Sequential(Dropout(0.2), Linear(1280, num_classes));
            1001 for TF ImageNet weights (index 0 = background), None for no classifier.
        output_stride: 8, 16 or 32 (native) stride of the final feature map.
        tf_same_padding: TF 'SAME' padding on the five (originally) stride-2 convs.
    """

    out_channels: tuple[int, int, int] = (24, 32, 1280)

    def __init__(self, num_classes: int | None = None, output_stride: int = 32, tf_same_padding: bool = False) -> None:
        super().__init__()
        if output_stride not in (8, 16, 32):
            raise ValueError(f"MobileNetV2 output_stride must be 8, 16 or 32, got {output_stride}")
        self.output_stride = output_stride
        self.tf_same_padding = tf_same_padding

        layers: list[nn.Module] = [ConvBNReLU6(3, 32, 3, stride=2, tf_same=tf_same_padding)]
        in_ch, current_stride, rate = 32, 2, 1
        for t, c, n, s in _SETTINGS:
            for i in range(n):
                stride = s if i == 0 else 1
                dilation = rate
                if stride > 1:
                    if current_stride >= output_stride:  # DeepLab: trade the stride for dilation
                        stride = 1
                        rate *= s
                    else:
                        current_stride *= s
                # TF SAME matters only where the conv really strides; stride 1 SAME == symmetric.
                layers.append(
                    InvertedResidual(in_ch, c, stride, t, dilation=dilation, tf_same=tf_same_padding and stride > 1)
                )
                in_ch = c
        layers.append(ConvBNReLU6(in_ch, 1280, kernel=1))
        self.features = nn.Sequential(*layers)
        if num_classes is not None:
            self.classifier = nn.Sequential(nn.Dropout(p=0.2), nn.Linear(1280, num_classes))
        self._init_weights()

    def _init_weights(self) -> None:
        """torchvision's initialisation, so a randomly initialised backbone trains the same way."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def stages(self) -> list[list[nn.Module]]:
        """The five stages (see the module docstring), stem first, for freezing."""
        modules = list(self.features)
        return [modules[a:b] for a, b in _STAGE_SLICES]

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """(B,3,H,W) -> [(B,24,H/4,W/4), (B,32,H/8,W/8), (B,1280,H/os,W/os)] (sizes rounded up).

        The final map is the 1280-ch ``features.18`` output, not the 320-ch ``features.17``: its global
        average is exactly what the ImageNet classifier reads, so a 1x1 CAM head on it is the classic
        CAM (GAP + linear) on a representation pretrained for that use, and ReLU6 makes it
        non-negative and bounded, which keeps CAM logits well scaled. 320-ch is a linear bottleneck
        (signed, never fed to a classifier in pretraining).
        """
        # channels_last: the depthwise convs (most of the time) run ~1.4x faster on CPU in it; outputs keep it.
        x = x.contiguous(memory_format=torch.channels_last)
        feats: list[Tensor] = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in _FEATURE_TAPS:
                feats.append(x)
        return feats

    def forward(self, x: Tensor) -> Tensor:
        """(B,3,H,W) -> (B,num_classes) logits with a classifier, else the (B,1280,h,w) final map."""
        x = self.features(x)
        if not hasattr(self, "classifier"):
            return x
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.classifier(x)


def mobilenet_v2(num_classes: int | None = None, output_stride: int = 32, tf_same_padding: bool = False) -> MobileNetV2:
    """MobileNetV2 1.0; see :class:`MobileNetV2`."""
    return MobileNetV2(num_classes=num_classes, output_stride=output_stride, tf_same_padding=tf_same_padding)
