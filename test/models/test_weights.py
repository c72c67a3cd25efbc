"""ImageNet weights: the built-in MobileNetV2 (exact, checksummed, sensible on real photos) and the profile
(input normalisation, padding, BatchNorm) each weight source sets, with torchvision/timm files made here."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from deal_ros.config import ConfigError, DealRosConfig, ModelConfig
from deal_ros.models import (
    BUILTIN_SHA256,
    WeightsError,
    build_cam_net,
    builtin_weights_path,
    describe_weights,
    load_builtin_state_dict,
    mobilenet_v2,
    normalize_input,
    resnet18,
    resnet50,
)
from deal_ros.models.builtin import BuiltinWeightsError
from deal_ros.models.mobilenet_v2 import Conv2dSame
from deal_ros.models.weights import guess_architecture, timm_mobilenet_v2_to_torchvision

# skimage's bundled photos -> acceptable ImageNet top-1 (1001-class indices: 0 = background, then torchvision's
# order + 1). TFLite's own top-1 for these (shared/data/mobilenet_v2_imagenet/README.md): tiger cat, espresso,
# missile, moped.
PHOTOS = {
    "chelsea": {282: "tabby cat", 283: "tiger cat", 286: "Egyptian cat"},
    "coffee": {968: "espresso"},
    "rocket": {658: "missile", 745: "projectile"},
    "motorcycle": {666: "moped", 671: "motor scooter"},
}


def _photo(name: str) -> np.ndarray:
    return skimage.data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skimage.data, name)()


def _imagenet_batch() -> torch.Tensor:
    """Central square crops, 224x224 bilinear + antialias (as the TFLite check did), pixel/128 - 1."""
    batch = []
    for name in PHOTOS:
        rgb = _photo(name)
        h, w = rgb.shape[:2]
        s = min(h, w)
        crop = np.ascontiguousarray(rgb[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s])
        t = torch.from_numpy(crop).permute(2, 0, 1)[None]
        batch.append(F.interpolate(t, size=(224, 224), mode="bilinear", antialias=True, align_corners=False))
    return normalize_input(torch.cat(batch), "tf")


@pytest.fixture(scope="module")
def builtin_state() -> dict[str, torch.Tensor]:
    return load_builtin_state_dict()[0]


def _classifier(state: dict[str, torch.Tensor]) -> nn.Module:
    model = mobilenet_v2(num_classes=1001, tf_same_padding=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


# -- the built-in file
def test_builtin_file_is_the_torchvision_layout(builtin_state: dict[str, torch.Tensor]) -> None:
    path = builtin_weights_path()
    assert path.is_file() and 3_000_000 < path.stat().st_size < 4_000_000
    assert (path.parent / "LICENSE").is_file() and "Apache" in (path.parent / "NOTICE.md").read_text()
    with torch.device("meta"):
        expected = mobilenet_v2(num_classes=1001).state_dict()
    assert {k: tuple(v.shape) for k, v in builtin_state.items()} == {k: tuple(v.shape) for k, v in expected.items()}
    assert all(v.dtype == torch.float32 for k, v in builtin_state.items() if not k.endswith("num_batches_tracked"))


def test_builtin_equals_the_shared_float_conversion(builtin_state: dict[str, torch.Tensor],
                                                    mobilenet_weights: Path) -> None:
    """Dequantising loses nothing: every one of the 314 tensors is bit-identical to the float file."""
    ref = load_file(str(mobilenet_weights))
    assert set(ref) == set(builtin_state)
    for key, value in ref.items():
        assert torch.equal(builtin_state[key], value), key


def test_builtin_top1_on_real_photos(builtin_state: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        probs = _classifier(builtin_state)(_imagenet_batch()).softmax(1)
    for (name, allowed), top1 in zip(PHOTOS.items(), probs.argmax(1).tolist(), strict=True):
        assert top1 in allowed, f"{name}: top-1 class {top1}, expected one of {allowed}"
    assert (probs.max(1).values > 0.5).all()  # confident, not a lucky argmax


def test_builtin_top1_agrees_with_float_weights(builtin_state: dict[str, torch.Tensor],
                                                mobilenet_weights: Path) -> None:
    x = _imagenet_batch()
    with torch.no_grad():
        logits = _classifier(builtin_state)(x)
        ref = _classifier(load_file(str(mobilenet_weights)))(x)
    assert logits.argmax(1).tolist() == ref.argmax(1).tolist()
    torch.testing.assert_close(logits, ref, rtol=0, atol=0)


def test_builtin_checksum_is_verified(tmp_path: Path) -> None:
    damaged = tmp_path / "damaged.safetensors"
    shutil.copy(builtin_weights_path(), damaged)
    data = bytearray(damaged.read_bytes())
    data[-1000] ^= 0x01  # one bit of one weight
    damaged.write_bytes(bytes(data))
    with pytest.raises(BuiltinWeightsError, match="damaged: sha256 .* expected " + BUILTIN_SHA256):
        load_builtin_state_dict(damaged)
    with pytest.raises(BuiltinWeightsError, match="missing"):
        load_builtin_state_dict(tmp_path / "absent.safetensors")


def test_default_model_uses_builtin_weights() -> None:
    model = build_cam_net(ModelConfig(), num_classes=2)
    report = model.load_report
    assert report is not None and report.source == "builtin" and report.sha256 == BUILTIN_SHA256
    assert len(report.loaded) == 312 and not report.missing and not report.unexpected
    assert report.ignored == ["classifier.1.bias", "classifier.1.weight"]
    assert "built-in ImageNet MobileNetV2" in describe_weights(model) and BUILTIN_SHA256[:16] in str(report)
    assert (model.cfg.input_norm, model.cfg.padding, model.cfg.freeze_bn) == ("tf", "tf_same", True)
    assert any(isinstance(m, Conv2dSame) for m in model.backbone.modules())
    model.train()
    assert not any(m.training for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d))


# -- profiles: what each weight source sets, and refusals
def test_profiles_follow_the_weights() -> None:
    def profile(cfg: ModelConfig) -> tuple[str, str, bool]:
        r = cfg.resolved()
        return r.input_norm, r.padding, r.freeze_bn

    assert profile(ModelConfig()) == ("tf", "tf_same", True)
    assert profile(ModelConfig(pretrained_path="resnet18-f37072fd.pth", backbone="resnet18")) == (
        "imagenet", "symmetric", True)
    assert profile(ModelConfig(pretrained_path="mine.pth")) == ("imagenet", "symmetric", True)
    assert profile(ModelConfig(pretrained_path="")) == ("imagenet", "symmetric", False)  # random init: BN trains
    explicit = ModelConfig(pretrained_path="mine.pth", input_norm="tf", padding="tf_same", freeze_bn=False)
    assert profile(explicit) == ("tf", "tf_same", False)
    # A checkpoint trained on the built-in weights does not fit a random-init configuration (other input norm).
    builtin = DealRosConfig().architecture_hash()
    assert builtin != DealRosConfig().updated({"model.pretrained_path": ""}).architecture_hash()
    assert builtin == DealRosConfig().updated({"model.input_norm": "tf"}).architecture_hash()


def test_configs_from_before_padding_still_load() -> None:
    """Checkpoints and YAML files with the boolean model.tf_same_padding keep what they were trained with."""
    old = DealRosConfig.from_dict({"model": {"pretrained_path": "", "tf_same_padding": True, "input_norm": "tf"}})
    assert (old.model.padding, old.model.resolved().input_norm) == ("tf_same", "tf")
    new = DealRosConfig.from_dict({"model": {"tf_same_padding": False, "pretrained_path": ""}})
    assert new.model.padding == "symmetric"
    with pytest.raises(ConfigError, match=r"model\.padding"):
        DealRosConfig.from_dict({"model": {"tf_same_padding": True, "padding": "auto"}})


@pytest.mark.parametrize(("overrides", "key"), [
    ({"input_norm": "imagenet"}, "model.input_norm"),
    ({"padding": "symmetric"}, "model.padding"),
    ({"freeze_bn": False}, "model.freeze_bn"),
    ({"backbone": "resnet18", "pretrained_path": "", "padding": "tf_same"}, "model.padding"),
    ({"input_norm": "caffe"}, "model.input_norm"),
])
def test_conflicting_settings_are_refused(overrides: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=f"'{key}'"):
        ModelConfig(**overrides).validate()


def _torchvision_like(model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """A state dict in torchvision's layout with real-looking BatchNorm statistics (not folded)."""
    torch.manual_seed(seed)
    state = model.state_dict()
    for key, value in state.items():
        if key.endswith("running_var"):
            state[key] = value.uniform_(0.5, 2.0)
        elif key.endswith("running_mean"):
            state[key] = value.normal_(0.0, 0.1)
    return state


def test_torchvision_mobilenet_file_gets_imagenet_profile(tmp_path: Path) -> None:
    state = _torchvision_like(mobilenet_v2(num_classes=1000), seed=1)
    path = tmp_path / "mobilenet_v2-b0353104.pth"
    torch.save(state, path)
    model = build_cam_net(ModelConfig(pretrained_path=str(path)), num_classes=2)
    assert (model.cfg.input_norm, model.cfg.padding) == ("imagenet", "symmetric")
    assert not any(isinstance(m, Conv2dSame) for m in model.backbone.modules())
    report = model.load_report
    assert report.source == "file" and report.layout == "torchvision" and len(report.loaded) == 312
    assert str(path) in str(report)
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, state[key]), key
    rgb = torch.full((1, 3, 1, 1), 255, dtype=torch.uint8)
    torch.testing.assert_close(model.normalize_input(rgb).flatten(), normalize_input(rgb, "imagenet").flatten())


def test_torch_hub_cache_name_and_resnet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    state = _torchvision_like(resnet18(num_classes=1000), seed=2)
    torch.save(state, cache / "resnet18-f37072fd.pth")
    cfg = ModelConfig(backbone="resnet18", pretrained_path="resnet18-f37072fd.pth")
    model = build_cam_net(cfg, num_classes=2)
    assert model.load_report.path == str(cache / "resnet18-f37072fd.pth")
    assert model.cfg.input_norm == "imagenet" and len(model.load_report.loaded) == 100 + 20
    assert torch.equal(model.backbone.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
    with pytest.raises(WeightsError, match=r"not found: resnet50-0676ba61\.pth .*hub/checkpoints.*nothing is downl"):
        build_cam_net(ModelConfig(backbone="resnet50", pretrained_path="resnet50-0676ba61.pth"), num_classes=2)
    # The file holds another network than model.backbone: named, with the fix.
    with pytest.raises(WeightsError, match="holds a ResNet-18 but model.backbone is mobilenet_v2 "
                                           r"\(set model.backbone: resnet18\)"):
        build_cam_net(ModelConfig(pretrained_path="resnet18-f37072fd.pth"), num_classes=2)


def test_builtin_weights_need_mobilenet_v2() -> None:
    with pytest.raises(WeightsError, match=r"holds a MobileNetV2 but model\.backbone is resnet18"):
        build_cam_net(ModelConfig(backbone="resnet18"), num_classes=2)


def test_guess_architecture() -> None:
    with torch.device("meta"):
        assert guess_architecture(mobilenet_v2().state_dict()) == "mobilenet_v2"
        assert guess_architecture(resnet18(num_classes=1000).state_dict()) == "resnet18"
        assert guess_architecture(resnet50().state_dict()) == "resnet50"
    assert guess_architecture({"conv.weight": torch.zeros(1)}) is None


def _timm_mobilenetv2_keys() -> list[tuple[str, str]]:
    """(timm mobilenetv2_100 key, torchvision key) pairs, written from timm's layout: stem, 7 stages of
    (1, 2, 3, 4, 3, 3, 1) blocks (stage 0 depthwise-separable), head, classifier."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    pairs = [("conv_stem.weight", "features.0.0.weight")] + [(f"bn1.{b}", f"features.0.1.{b}") for b in bn]
    feature = 1
    for stage, repeats in enumerate((1, 2, 3, 4, 3, 3, 1)):
        for block in range(repeats):
            t, f = f"blocks.{stage}.{block}", f"features.{feature}.conv"
            if stage == 0:
                convs = {"conv_dw": "0.0", "conv_pw": "1"}
                bns = {"bn1": "0.1", "bn2": "2"}
            else:
                convs = {"conv_pw": "0.0", "conv_dw": "1.0", "conv_pwl": "2"}
                bns = {"bn1": "0.1", "bn2": "1.1", "bn3": "3"}
            pairs += [(f"{t}.{c}.weight", f"{f}.{v}.weight") for c, v in convs.items()]
            pairs += [(f"{t}.{n}.{b}", f"{f}.{v}.{b}") for n, v in bns.items() for b in bn]
            feature += 1
    pairs += [("conv_head.weight", "features.18.0.weight")] + [(f"bn2.{b}", f"features.18.1.{b}") for b in bn]
    pairs += [("classifier.weight", "classifier.1.weight"), ("classifier.bias", "classifier.1.bias")]
    return pairs


def test_timm_mobilenet_v2_file(tmp_path: Path) -> None:
    reference = _torchvision_like(mobilenet_v2(num_classes=1000), seed=3)
    pairs = _timm_mobilenetv2_keys()
    assert {tv for _, tv in pairs} == set(reference)
    timm_state = {timm: reference[tv] for timm, tv in pairs}
    assert timm_mobilenet_v2_to_torchvision(timm_state).keys() == reference.keys()
    path = tmp_path / "mobilenetv2_100_ra-b33bc2c4.pth"
    torch.save(timm_state, path)
    model = build_cam_net(ModelConfig(pretrained_path=str(path)), num_classes=2)
    assert model.load_report.layout == "timm" and len(model.load_report.loaded) == 312
    assert model.cfg.input_norm == "imagenet"
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, reference[key]), key


def test_folded_batchnorm_file_needs_tf_settings(tmp_path: Path, builtin_state: dict[str, torch.Tensor]) -> None:
    """A TF conversion (folded BN) given as a file: 'auto' (= torchvision profile) is refused, naming the fix."""
    path = tmp_path / "tf_converted.safetensors"
    save_file(builtin_state, str(path))
    with pytest.raises(WeightsError, match=r"folded BatchNorm.*model\.input_norm: 'imagenet' \(needs 'tf'\), "
                                           r"model\.padding: 'symmetric' \(needs 'tf_same'\).*builtin"):
        build_cam_net(ModelConfig(pretrained_path=str(path)), num_classes=2)
    with pytest.raises(WeightsError, match=r"model\.freeze_bn: false"):
        build_cam_net(ModelConfig(pretrained_path=str(path), input_norm="tf", padding="tf_same", freeze_bn=False),
                      num_classes=2)
    model = build_cam_net(ModelConfig(pretrained_path=str(path), input_norm="tf", padding="tf_same"), num_classes=2)
    builtin = build_cam_net(ModelConfig(), num_classes=2)
    x = _imagenet_batch()[:1, :, :128, :160]
    with torch.no_grad():
        torch.testing.assert_close(model.eval().backbone.forward_features(x)[-1],
                                   builtin.eval().backbone.forward_features(x)[-1], rtol=0, atol=0)
