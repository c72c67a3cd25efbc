"""Backbones, CAM network, weight loading: real-data parity, torchvision names, shapes, freezing, errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from deal_ros.config import ModelConfig
from deal_ros.models import (
    BACKBONES,
    CAMNet,
    CAMOutput,
    LoadReport,
    WeightsError,
    build_cam_net,
    load_pretrained,
    mobilenet_v2,
    normalize_input,
    resnet18,
    resnet50,
    tf_same_pad,
)
from deal_ros.models.mobilenet_v2 import Conv2dSame

BACKBONE_NAMES = ["mobilenet_v2", "resnet18", "resnet50"]

# TFLite top-1 of the 15 APC frames (shared/data/mobilenet_v2_imagenet/README.md, per-image table).
APC_TFLITE_TOP1 = [
    "desk", "desk", "bookcase", "desk", "desk", "bookcase", "bookcase", "desk",
    "desk", "file cabinet", "file cabinet", "file cabinet", "laptop", "bookcase", "bookcase",
]  # fmt: skip


@pytest.fixture(autouse=True)
def _exact_cuda_math():
    """TF32 convs would add ~1e-3 relative error; the parity margins on the shelf frames are smaller."""
    if not torch.cuda.is_available():
        yield
        return
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def _imagenet_input(path: Path) -> torch.Tensor:
    """Central square crop, 224x224 bilinear with antialiasing (bit-identical to PIL's BILINEAR,
    which the converter's check used), pixel/128 - 1 -> (1,3,224,224).

    cv2.INTER_LINEAR does not antialias; on these low-margin frames it flips 4 of 15 top-1s
    (frame-000009 becomes 'carton'), so the resize is done by torch on uint8.
    """
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert bgr is not None, path
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    h, w = rgb.shape[:2]
    s = min(h, w)
    crop = np.ascontiguousarray(rgb[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s])
    t = torch.from_numpy(crop).permute(2, 0, 1)[None].contiguous()
    t = F.interpolate(t, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
    return normalize_input(t, "tf")


@pytest.fixture(scope="module")
def apc_batch(apc_scene: Path) -> torch.Tensor:
    return torch.cat([_imagenet_input(apc_scene / f"frame-{i:06d}.color.png") for i in range(15)])


# -- (1) real-data parity
def test_labels_file_indexing(imagenet_labels: list[str]) -> None:
    # 1001 lines, line 0 = TF background, then torchvision's order (ImageNet 526 'desk' -> 527 here).
    assert len(imagenet_labels) == 1001
    assert imagenet_labels[0] == "background"
    assert imagenet_labels[1].startswith("tench")
    assert imagenet_labels[527] == "desk"
    assert "file cabinet" in imagenet_labels[554]
    assert imagenet_labels[1000].startswith("toilet tissue")


def test_mobilenet_imagenet_parity_on_apc(
    device: str, mobilenet_weights: Path, apc_batch: torch.Tensor, imagenet_labels: list[str]
) -> None:
    model = mobilenet_v2(num_classes=1001, tf_same_padding=True)
    report = load_pretrained(model, mobilenet_weights)
    assert len(report.loaded) == 314 and not report.missing and not report.unexpected
    model = model.to(device).eval()
    with torch.no_grad():
        top1 = model(apc_batch.to(device)).argmax(1).cpu().tolist()
    names = [imagenet_labels[i] for i in top1]
    assert names[0] == "desk"
    assert "file cabinet" in names[9]
    # Every frame agrees with the TFLite interpreter's top-1 (README table).
    for i, (name, expected) in enumerate(zip(names, APC_TFLITE_TOP1, strict=True)):
        assert expected in name, f"frame-{i:06d}: got {name!r}, TFLite says {expected!r}"

    # Symmetric padding (plain torchvision) shifts the sampling grid: frame 0 is no longer 'desk'.
    sym = mobilenet_v2(num_classes=1001, tf_same_padding=False)
    sym.load_state_dict(model.state_dict())
    with torch.no_grad():
        sym_top1 = sym.to(device).eval()(apc_batch[:1].to(device)).argmax(1).item()
    assert imagenet_labels[sym_top1] != "desk"


def test_tf_same_pad_rule() -> None:
    assert tf_same_pad(224, 3, 2) == (0, 1)  # even size: extra pixel bottom/right
    assert tf_same_pad(225, 3, 2) == (1, 1)
    assert tf_same_pad(15, 3, 2) == (1, 1)
    assert tf_same_pad(30, 3, 1, dilation=2) == (2, 2)  # stride 1: symmetric
    assert tf_same_pad(8, 1, 2) == (0, 0)
    # Conv2dSame == explicit F.pad recipe from the README; output size ceil(n / 2).
    torch.manual_seed(0)
    conv = Conv2dSame(3, 4, 3, 2, bias=False)
    x = torch.randn(1, 3, 10, 13)
    ref = F.conv2d(F.pad(x, (1, 1, 0, 1)), conv.weight, stride=2)
    assert torch.allclose(conv(x), ref, atol=1e-6)
    assert conv(x).shape[-2:] == (5, 7)


# -- (2) torchvision naming
def _torchvision_mobilenet_keys(num_classes: int) -> set[str]:
    """State-dict keys of torchvision's mobilenet_v2, derived independently from its layout."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    keys = {"features.0.0.weight"} | {f"features.0.1.{b}" for b in bn}
    keys |= {"features.1.conv.0.0.weight", "features.1.conv.1.weight"}
    keys |= {f"features.1.conv.0.1.{b}" for b in bn} | {f"features.1.conv.2.{b}" for b in bn}
    for i in range(2, 18):
        keys |= {
            f"features.{i}.conv.0.0.weight",
            f"features.{i}.conv.1.0.weight",
            f"features.{i}.conv.2.weight",
        }
        for sub in ("0.1", "1.1", "3"):
            keys |= {f"features.{i}.conv.{sub}.{b}" for b in bn}
    keys |= {"features.18.0.weight"} | {f"features.18.1.{b}" for b in bn}
    if num_classes:
        keys |= {"classifier.1.weight", "classifier.1.bias"}
    return keys


@pytest.mark.parametrize("output_stride", [32, 16, 8])
def test_mobilenet_state_dict_matches_torchvision(output_stride: int, mobilenet_weights: Path) -> None:
    with torch.device("meta"):  # keys and shapes only
        sd = mobilenet_v2(num_classes=1001, output_stride=output_stride, tf_same_padding=True).state_dict()
    assert len(sd) == 314
    assert set(sd) == _torchvision_mobilenet_keys(1001)
    assert sum(k.endswith("num_batches_tracked") for k in sd) == 52
    shapes = {
        "features.0.0.weight": (32, 3, 3, 3),
        "features.1.conv.0.0.weight": (32, 1, 3, 3),
        "features.1.conv.1.weight": (16, 32, 1, 1),
        "features.2.conv.0.0.weight": (96, 16, 1, 1),
        "features.2.conv.1.0.weight": (96, 1, 3, 3),
        "features.2.conv.2.weight": (24, 96, 1, 1),
        "features.17.conv.2.weight": (320, 960, 1, 1),
        "features.18.0.weight": (1280, 320, 1, 1),
        "classifier.1.weight": (1001, 1280),
    }
    for key, shape in shapes.items():
        assert tuple(sd[key].shape) == shape, key
    # The shared file loads strictly (dilation changes no key or shape).
    from safetensors.torch import load_file

    if output_stride == 16:
        model = mobilenet_v2(num_classes=1001, output_stride=output_stride)
        model.load_state_dict(load_file(str(mobilenet_weights)), strict=True)
    # Feature backbone: same minus the classifier.
    with torch.device("meta"):
        assert set(mobilenet_v2().state_dict()) == _torchvision_mobilenet_keys(0)


def test_resnet_state_dicts_match_torchvision() -> None:
    # Counted from torchvision's layout: resnet18 = 1 stem conv + 16 block convs + 3 downsample convs
    # = 20 convs, 20 BNs (5 entries each), fc (2): 20 + 100 + 2 = 122 entries; parameters only:
    # 20 + 40 + 2 = 62. resnet50: 53 convs -> 53 + 265 + 2 = 320 entries, 161 parameters.
    for build, entries, n_params, numel in (
        (resnet18, 122, 62, 11_689_512),
        (resnet50, 320, 161, 25_557_032),
    ):
        with torch.device("meta"):  # shapes only: no memory, no init cost
            model = build(num_classes=1000)
            sd = model.state_dict()
        assert len(sd) == entries, build.__name__
        assert len(list(model.parameters())) == n_params, build.__name__
        assert sum(p.numel() for p in model.parameters()) == numel, build.__name__
        for os_ in (16, 8):
            with torch.device("meta"):
                dilated = build(num_classes=1000, output_stride=os_).state_dict()
            assert {k: v.shape for k, v in dilated.items()} == {k: v.shape for k, v in sd.items()}
        with torch.device("meta"):
            assert not any(k.startswith("fc.") for k in build().state_dict())
    with torch.device("meta"):
        sd18 = resnet18(num_classes=1000).state_dict()
        sd50 = resnet50(num_classes=1000).state_dict()
    assert tuple(sd18["conv1.weight"].shape) == (64, 3, 7, 7)
    assert tuple(sd18["layer1.0.conv2.weight"].shape) == (64, 64, 3, 3)
    assert tuple(sd18["layer2.0.downsample.0.weight"].shape) == (128, 64, 1, 1)
    assert "layer2.0.downsample.1.running_var" in sd18
    assert "layer1.0.downsample.0.weight" not in sd18
    assert tuple(sd18["fc.weight"].shape) == (1000, 512)
    assert tuple(sd50["layer1.0.downsample.0.weight"].shape) == (256, 64, 1, 1)
    assert tuple(sd50["layer3.5.conv2.weight"].shape) == (256, 256, 3, 3)
    assert tuple(sd50["layer4.2.conv3.weight"].shape) == (2048, 512, 1, 1)
    assert tuple(sd50["fc.weight"].shape) == (1000, 2048)


# -- (3) output shapes
@pytest.mark.parametrize("output_stride", [16, 8])
@pytest.mark.parametrize("backbone", BACKBONE_NAMES)
def test_cam_net_output_shapes(backbone: str, output_stride: int, device: str) -> None:
    torch.manual_seed(0)
    # MobileNetV2 with its default (built-in) weights; the ResNets from random init (no ResNet weights here).
    cfg = ModelConfig(backbone=backbone, output_stride=output_stride,
                      pretrained_path="builtin" if backbone == "mobilenet_v2" else "")
    model = build_cam_net(cfg, num_classes=3).to(device).eval()
    rgb = torch.randint(0, 256, (1, 3, 240, 320), dtype=torch.uint8, device=device)
    with torch.no_grad():
        out = model(model.normalize_input(rgb))
    assert isinstance(out, CAMOutput)
    h, w = 240 // output_stride, 320 // output_stride
    assert out.cam_logits.shape == (1, 3, h, w)
    assert out.class_logits.shape == (1, 3)
    assert out.seg_logits.shape == (1, 4, 60, 80)
    c4, c8, cf = model.backbone.out_channels
    assert [tuple(f.shape) for f in out.features] == [(1, c4, 60, 80), (1, c8, 30, 40), (1, cf, h, w)]
    torch.testing.assert_close(out.class_logits, out.cam_logits.mean(dim=(2, 3)))
    assert all(torch.isfinite(t).all() for t in (out.cam_logits, out.seg_logits))
    assert out.cam_logits.device.type == device.type


@pytest.mark.parametrize(
    ("name", "offset"), [("mobilenet_v2", 0), ("mobilenet_v2_tf", 1), ("resnet18", 0), ("resnet50", 0)]
)
def test_dilation_is_exact_densification(name: str, offset: int, apc_batch: torch.Tensor) -> None:
    """OS 16/8 must compute the OS32 network densely: its final map sampled on the OS32 grid equals
    the OS32 map, so pretrained weights keep their meaning. TF SAME on even sizes samples the odd
    positions (offset 1 per removed stride, i.e. 1 at OS16 and 2 * 1 + 1 = 3 at OS8)."""
    torch.manual_seed(0)
    build = {
        "mobilenet_v2": lambda os_: mobilenet_v2(output_stride=os_),
        "mobilenet_v2_tf": lambda os_: mobilenet_v2(output_stride=os_, tf_same_padding=True),
        "resnet18": lambda os_: resnet18(output_stride=os_),
        "resnet50": lambda os_: resnet50(output_stride=os_),
    }[name]
    ref = build(32).eval()
    if name.startswith("mobilenet_v2"):  # real weights: random-init MobileNetV2 activations vanish
        load_pretrained(ref, "builtin")
        x = apc_batch[:1, :, 48:176, 32:192]  # 128x160: even sizes at strides 8 and 16
    else:
        x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        expected = ref.forward_features(x)[-1]
        for os_ in (16, 8):
            dense = build(os_).eval()
            dense.load_state_dict(ref.state_dict())
            k = 32 // os_
            start = offset * (k - 1)  # 0 -> 0; TF: 1 at OS16, 3 at OS8
            got = dense.forward_features(x)[-1][..., start::k, start::k]
            assert got.shape == expected.shape
            torch.testing.assert_close(got, expected, atol=1e-4 * expected.abs().max().item(), rtol=0)


def test_normalize_input() -> None:
    rgb = torch.tensor([0, 128, 255], dtype=torch.uint8).view(1, 3, 1, 1)
    tf = normalize_input(rgb, "tf").flatten().tolist()
    assert tf == [-1.0, 0.0, 255 / 128 - 1]
    assert normalize_input(rgb.float(), "tf").dtype == torch.float32
    im = normalize_input(rgb, "imagenet").flatten()
    torch.testing.assert_close(im, torch.tensor([-0.485 / 0.229, (128 / 255 - 0.456) / 0.224, (1 - 0.406) / 0.225]))
    with pytest.raises(ValueError, match="B,3,H,W"):
        normalize_input(torch.zeros(3, 4, 4), "tf")


# -- (4) freezing
def _bns(module: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]


@pytest.mark.parametrize("backbone", ["mobilenet_v2", "resnet18"])
def test_freeze_bn_and_stages(backbone: str, device: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    weights = "builtin"
    if backbone == "resnet18":  # pretrained weights (freeze_bn applies to those only), made here
        weights = str(tmp_path / "resnet18.safetensors")
        save_file(resnet18().state_dict(), weights)
    cfg = ModelConfig(backbone=backbone, freeze_bn=True, freeze_stages=2, pretrained_path=weights)
    model = build_cam_net(cfg, num_classes=2).to(device)
    model.eval()
    model.train()
    assert model.training and model.seg_head.training
    assert not any(bn.training for bn in _bns(model.backbone))
    assert all(bn.training for bn in _bns(model.seg_head))
    stats = {k: v.clone() for k, v in model.backbone.state_dict().items() if "running" in k}

    out = model(torch.randn(2, 3, 64, 96, device=device))
    (out.class_logits.sum() + out.seg_logits.mean()).backward()

    stages = model.backbone.stages()
    frozen = [p for m in stages[0] + stages[1] for p in m.parameters()]
    assert frozen and all(not p.requires_grad and p.grad is None for p in frozen)
    later_convs = [m for s in stages[2:] for mod in s for m in mod.modules() if isinstance(m, nn.Conv2d)]
    assert later_convs and all(m.weight.grad is not None and m.weight.grad.abs().sum() > 0 for m in later_convs)
    assert all(p.grad is None for bn in _bns(model.backbone) for p in bn.parameters())
    assert model.cam_head.weight.grad is not None and model.cam_head.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.seg_head.parameters())
    for k, v in model.backbone.state_dict().items():  # eval-mode BN: running stats untouched
        if k in stats:
            assert torch.equal(v, stats[k]), k

    groups = model.param_groups(lr=1e-3, backbone_lr_scale=0.1)
    assert [g["name"] for g in groups] == ["backbone", "heads"]
    assert groups[0]["lr"] == pytest.approx(1e-4) and groups[1]["lr"] == pytest.approx(1e-3)
    grouped = [p for g in groups for p in g["params"]]
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(grouped) == len(trainable) == len({id(p) for p in grouped})
    assert {id(p) for p in groups[1]["params"]} == {
        id(p) for m in (model.cam_head, model.seg_head) for p in m.parameters()
    }
    torch.optim.AdamW(groups)  # accepted as is


def test_trainable_bn_when_not_frozen() -> None:
    cfg = ModelConfig(backbone="resnet18", freeze_bn=False, freeze_stages=1)
    model = CAMNet(cfg, num_classes=2).train()
    assert not model.backbone.bn1.training and not model.backbone.bn1.weight.requires_grad  # stem frozen
    assert model.backbone.layer1[0].bn1.training and model.backbone.layer1[0].bn1.weight.requires_grad
    model.eval()
    assert not any(m.training for m in model.modules())
    # Random init: BatchNorm always trains (frozen initial statistics would leave the features near zero).
    random_init = CAMNet(ModelConfig(pretrained_path="", freeze_bn=True), num_classes=2).train()
    bns = _bns(random_init.backbone)
    assert bns and all(bn.training and bn.weight.requires_grad for bn in bns)
    all_frozen = CAMNet(ModelConfig(backbone="resnet18", freeze_stages=5), num_classes=2)
    assert [g["name"] for g in all_frozen.param_groups(1e-3, 0.1)] == ["heads"]


def test_registry_and_constructor_checks() -> None:
    assert set(BACKBONES) == set(BACKBONE_NAMES)
    with pytest.raises(ValueError, match="output_stride"):
        mobilenet_v2(output_stride=4)
    with pytest.raises(ValueError, match="output_stride"):
        resnet18(output_stride=12)
    with pytest.raises(ValueError, match="num_classes"):
        CAMNet(ModelConfig(), num_classes=0)


# -- (5) / (6) weight loading
def test_build_cam_net_loads_shared_weights(mobilenet_weights: Path) -> None:
    from safetensors.torch import load_file

    # The shared float file is a TF conversion (folded BN): as a file it needs the TF settings spelt out.
    cfg = ModelConfig(pretrained_path=str(mobilenet_weights), input_norm="tf", padding="tf_same")
    model = build_cam_net(cfg, num_classes=4)
    report = model.load_report
    assert isinstance(report, LoadReport)
    assert report.ignored == ["classifier.1.bias", "classifier.1.weight"]
    assert len(report.loaded) == 312 and not report.missing and not report.unexpected
    ref = load_file(str(mobilenet_weights))
    assert torch.equal(model.backbone.features[18][0].weight, ref["features.18.0.weight"])
    assert torch.equal(model.backbone.features[14].conv[1][1].bias, ref["features.14.conv.1.1.bias"])


def test_load_pretrained_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.safetensors"
    with pytest.raises(WeightsError, match="not found") as err:
        load_pretrained(mobilenet_v2(), path)
    assert str(path) in str(err.value)
    with pytest.raises(WeightsError, match="not found"):
        build_cam_net(ModelConfig(pretrained_path=str(path)), num_classes=1)


def test_load_pretrained_truncated_file(tmp_path: Path, mobilenet_weights: Path) -> None:
    data = mobilenet_weights.read_bytes()
    path = tmp_path / "half.safetensors"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="truncated or corrupt") as err:
        load_pretrained(mobilenet_v2(), path)
    assert str(path) in str(err.value)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a torch file" * 10)
    with pytest.raises(WeightsError, match="truncated or corrupt"):
        load_pretrained(mobilenet_v2(), garbage)


def test_load_pretrained_wrong_architecture(tmp_path: Path) -> None:
    path = tmp_path / "resnet18.safetensors"
    save_file(resnet18(num_classes=1000).state_dict(), str(path))
    with pytest.raises(WeightsError, match="shares no parameter name with MobileNetV2") as err:
        load_pretrained(mobilenet_v2(), path)
    assert str(path) in str(err.value) and "conv1" in str(err.value)
    # Same naming, different shapes: the first mismatching keys are listed.
    with torch.device("meta"), pytest.raises(WeightsError, match="does not fit ResNet") as err:
        load_pretrained(resnet50(), path)
    assert "shape mismatches" in str(err.value) and "layer1.0.conv1.weight" in str(err.value)


def test_load_pretrained_rejects_nan_and_pickled_code(tmp_path: Path) -> None:
    sd = resnet18().state_dict()
    sd["layer1.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    nan_path = tmp_path / "nan.safetensors"
    save_file(sd, str(nan_path))
    with pytest.raises(WeightsError, match="NaN"):
        load_pretrained(resnet18(), nan_path)
    code_path = tmp_path / "code.pt"
    torch.save({"state_dict": resnet18().state_dict(), "extra": Path("x")}, code_path)
    with pytest.raises(WeightsError, match="corrupt"):  # weights_only refuses arbitrary objects
        load_pretrained(resnet18(), code_path)


@pytest.mark.parametrize("wrapper", [None, "state_dict", "model"])
def test_load_pretrained_torch_state_dict(tmp_path: Path, wrapper: str | None) -> None:
    torch.manual_seed(1)
    source = resnet18(num_classes=1000)
    sd = source.state_dict()
    path = tmp_path / "resnet18.pth"
    torch.save(sd if wrapper is None else {wrapper: sd, "epoch": 3}, path)
    target = resnet18()  # feature backbone: no fc
    report = load_pretrained(target, path)
    assert report.ignored == ["fc.bias", "fc.weight"]
    assert len(report.loaded) == 120 and not report.missing and not report.unexpected
    for key, value in target.state_dict().items():
        assert torch.equal(value, sd[key]), key
    # A classification model takes the fc too.
    report_fc = load_pretrained(resnet18(num_classes=1000), path)
    assert len(report_fc.loaded) == 122 and not report_fc.ignored


def test_load_pretrained_partial_is_reported(tmp_path: Path) -> None:
    sd = {k: v for k, v in resnet18().state_dict().items() if not k.startswith("layer4.")}
    sd["extra.weight"] = torch.zeros(1)
    path = tmp_path / "partial.safetensors"
    save_file(sd, str(path))
    report = load_pretrained(resnet18(), path)
    assert report.missing and all(k.startswith("layer4.") for k in report.missing)
    assert report.unexpected == ["extra.weight"]
    assert "missing" in str(report)
