"""The backbone's speed paths compute what the plain layers compute: folded eval BN, channels_last, frozen stages."""

import dataclasses

import torch
from torch import nn

from deal_ros.config import ModelConfig
from deal_ros.models import CAMNet
from deal_ros.models.mobilenet_v2 import Conv2dSame, conv_bn


def _bn(channels: int, seed: int) -> nn.BatchNorm2d:
    gen = torch.Generator().manual_seed(seed)
    bn = nn.BatchNorm2d(channels)
    with torch.no_grad():
        bn.weight.copy_(torch.rand(channels, generator=gen) + 0.5)
        bn.bias.copy_(torch.randn(channels, generator=gen))
        bn.running_mean.copy_(torch.randn(channels, generator=gen))
        bn.running_var.copy_(torch.rand(channels, generator=gen) + 0.1)
    return bn


def _grads(conv: nn.Module, bn: nn.Module, x: torch.Tensor, folded: bool) -> list[torch.Tensor]:
    conv.zero_grad()
    bn.zero_grad()
    y = conv_bn(conv, bn, x) if folded else bn(conv(x))
    (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
    return [y.detach(), conv.weight.grad.clone(), bn.weight.grad.clone(), bn.bias.grad.clone()]


def test_eval_bn_folded_into_the_conv_gives_the_same_values_and_gradients():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 9, 11)
    for conv in (nn.Conv2d(6, 8, 3, padding=1, bias=False), Conv2dSame(6, 8, 3, stride=2, bias=True),
                 nn.Conv2d(6, 6, 3, padding=1, groups=6, bias=False)):
        bn = _bn(conv.out_channels, 1).eval()
        for got, want in zip(_grads(conv, bn, x, True), _grads(conv, bn, x, False), strict=True):
            # float32 rounding of sums over the batch: relative to the largest value of the tensor
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))


def test_training_bn_uses_batch_statistics_not_a_fold():
    conv, bn = nn.Conv2d(3, 4, 1, bias=False), _bn(4, 2).train()
    x = torch.randn(4, 3, 5, 5)
    y = conv_bn(conv, bn, x)
    torch.testing.assert_close(y.mean(dim=(0, 2, 3)), bn.bias.detach(), atol=1e-5, rtol=0)  # batch-normalised


def _model(**overrides) -> CAMNet:
    torch.manual_seed(0)
    settings = {"pretrained_path": "", "input_height": 64, "input_width": 96, **overrides}
    cfg = dataclasses.replace(ModelConfig(), **settings)
    return CAMNet(cfg, 3)


def test_channels_last_forward_equals_the_contiguous_layers():
    model = _model(padding="tf_same").eval()
    x = torch.randn(2, 3, 64, 96)
    out = model(x)
    # The same layers called one by one on a contiguous tensor, BN unfolded.
    y, feats = x, []
    for i, layer in enumerate(model.backbone.features):
        if isinstance(layer, nn.Sequential):  # ConvBNReLU6
            y = layer[2](layer[1](layer[0](y)))
        else:
            z = layer.conv[-1](layer.conv[-2](nn.Sequential(*layer.conv[:-2])(y)))
            y = y + z if layer.use_res_connect else z
        if i in (3, 6, 18):
            feats.append(y)
    assert out.features[0].is_contiguous(memory_format=torch.channels_last)
    for got, want in zip(out.features, feats, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_frozen_stages_are_not_in_the_backward_graph():
    model = _model(freeze_stages=2, pretrained_path="builtin").train()  # stages freeze for pretrained weights
    out = model(torch.randn(2, 3, 64, 96))
    assert out.features[0].grad_fn is None  # stride-4 feature = end of stage 1: no autograd record at all
    assert out.features[1].grad_fn is not None
    out.class_logits.sum().backward()
    frozen = [p for stage in model.backbone.stages()[:2] for m in stage for p in m.parameters()]
    assert frozen and all(p.grad is None for p in frozen)


def test_random_init_trains_every_stage_whatever_freeze_stages_says():
    model = _model(freeze_stages=3)  # pretrained_path '' = random init: frozen random features would learn nothing
    assert model.cfg.freeze_stages == 0
    assert all(p.requires_grad for p in model.backbone.parameters())
