from __future__ import annotations

import pytest

from deal_ros.config import ConfigError, DealConfig, load_config


def test_defaults_validate_and_round_trip() -> None:
    cfg = DealConfig(classes=["mug", "box"])
    assert DealConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.num_classes == 2


def test_yaml_and_ros_parameter_file_give_the_same_config(tmp_path) -> None:
    plain = tmp_path / "plain.yaml"
    plain.write_text("classes: [mug, box]\nloss:\n  deal:\n    weight: 0.5\n")
    ros = tmp_path / "ros.yaml"
    ros.write_text("deal_trainer:\n  ros__parameters:\n    rgb_topic: /camera/color/image_raw\n"
                   "    classes: [mug, box]\n    loss:\n      deal:\n        weight: 0.5\n")
    assert load_config(plain) == load_config(ros)
    assert load_config(plain).loss.deal.weight == 0.5


@pytest.mark.parametrize(("data", "message"), [
    ({"classes": []}, "at least one"),
    ({"classes": ["a", "a"]}, "unique"),
    ({"classes": ["background"]}, "implicit"),
    ({"model": {"backbone": "vgg"}}, "model.backbone"),
    ({"model": {"bakbone": "resnet18"}}, "unknown key"),
    ({"model": {"input_height": 100}}, "multiple of 16"),
    ({"loss": {"deal": {"weight": "high"}}}, "loss.deal.weight"),
    ({"pseudo_label": {"fg_threshold": 0.2, "bg_threshold": 0.5}}, "bg_threshold"),
    ({"train": {"device": "tpu"}}, "train.device"),
])
def test_bad_values_name_the_key(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        DealConfig.from_dict(data)


def test_overrides_and_errors(tmp_path) -> None:
    cfg = DealConfig().updated({"loss.deal.weight": 0.25, "classes": "mug, box"})
    assert cfg.loss.deal.weight == 0.25
    assert cfg.classes == ["mug", "box"]
    with pytest.raises(ConfigError, match="unknown key"):
        cfg.updated({"loss.deal.lambda": 1})
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("classes: [mug\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_architecture_hash_ignores_training_only_fields() -> None:
    cfg = DealConfig(classes=["mug"])
    assert cfg.architecture_hash() == cfg.updated({"model.freeze_stages": 2, "train.lr": 0.1}).architecture_hash()
    # Which weights file does not matter, but what it implies does (builtin: 'tf' input norm, files: 'imagenet').
    a, b = (cfg.updated({"model.pretrained_path": p}).architecture_hash() for p in ("a.pth", "b.pth"))
    assert a == b != cfg.architecture_hash()
    assert cfg.architecture_hash() != cfg.updated({"model.backbone": "resnet18"}).architecture_hash()
    assert cfg.architecture_hash() != DealConfig(classes=["box"]).architecture_hash()
