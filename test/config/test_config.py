from __future__ import annotations

import re

import pytest

from deal_ros.config import Bounds, ConfigError, ConfigKey, DealRosConfig, config_keys, load_config, setting
from deal_ros.online.parameters import NODE_SECTIONS


def test_defaults_validate_and_round_trip() -> None:
    cfg = DealRosConfig(classes=["mug", "box"])
    assert DealRosConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.num_classes == 2


def test_yaml_and_ros_parameter_file_give_the_same_config(tmp_path) -> None:
    plain = tmp_path / "plain.yaml"
    plain.write_text("classes: [mug, box]\nloss:\n  deal:\n    weight: 0.5\n")
    ros = tmp_path / "ros.yaml"
    ros.write_text("deal_trainer:\n  ros__parameters:\n    sync:\n      slop: 0.05\n"
                   "    classes: [mug, box]\n    loss:\n      deal:\n        weight: 0.5\n")
    assert load_config(plain) == load_config(ros, node_sections=NODE_SECTIONS)
    assert load_config(plain).loss.deal.weight == 0.5


@pytest.mark.parametrize(("data", "message"), [
    ({"classes": []}, "at least one"),
    ({"classes": ["a", "a"]}, "unique"),
    ({"classes": ["background"]}, "implicit"),
    ({"model": {"backbone": "vgg"}}, "model.backbone"),
    ({"model": {"bakbone": "resnet18"}}, "unknown key"),
    ({"model": {"input_height": 100}}, "multiple of 16"),
    ({"model": {"input_height": 128}}, "input_height and input_width together"),
    ({"model": {"input_height": 16, "input_width": 16}}, "0 \\(auto\\) or >= 32"),
    ({"loss": {"deal": {"weight": "high"}}}, "loss.deal.weight"),
    ({"pseudo_label": {"fg_threshold": 0.2, "bg_threshold": 0.5}}, "bg_threshold"),
    ({"train": {"device": "tpu"}}, "train.device"),
])
def test_bad_values_name_the_key(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        DealRosConfig.from_dict(data)


def test_overrides_and_errors(tmp_path) -> None:
    cfg = DealRosConfig().updated({"loss.deal.weight": 0.25, "classes": "mug, box"})
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


def test_the_auto_network_size_is_the_devices_and_a_given_size_is_kept() -> None:
    auto = DealRosConfig()
    assert (auto.model.input_height, auto.model.input_width) == (0, 0)
    cpu, cuda = auto.for_device("cpu").model, auto.for_device("cuda").model
    assert (cpu.input_height, cpu.input_width) == (128, 160)
    assert (cuda.input_height, cuda.input_width) == (240, 320)
    given = DealRosConfig().updated({"model.input_height": 64, "model.input_width": 80})
    assert given.for_device("cpu") is given and given.for_device("cuda") is given
    assert auto.for_device("cpu").architecture_hash() == auto.architecture_hash()  # weights load at either size


def test_architecture_hash_ignores_training_only_fields() -> None:
    cfg = DealRosConfig(classes=["mug"])
    assert cfg.architecture_hash() == cfg.updated({"model.freeze_stages": 2, "train.lr": 0.1}).architecture_hash()
    # Which weights file does not matter, but what it implies does (builtin: 'tf' input norm, files: 'imagenet').
    a, b = (cfg.updated({"model.pretrained_path": p}).architecture_hash() for p in ("a.pth", "b.pth"))
    assert a == b != cfg.architecture_hash()
    assert cfg.architecture_hash() != cfg.updated({"model.backbone": "resnet18"}).architecture_hash()
    assert cfg.architecture_hash() != DealRosConfig(classes=["box"]).architecture_hash()


def test_numbers_as_people_write_them_and_non_finite_refused(tmp_path) -> None:
    plain = tmp_path / "plain.yaml"
    plain.write_text("train: {lr: 1e-4, weight_decay: 1E-3}\naugment: {scale_min: .5}\nbuffer: {max_frames: 1e3}\n")
    cfg = load_config(plain)
    numbers = (cfg.train.lr, cfg.train.weight_decay, cfg.augment.scale_min, cfg.buffer.max_frames)
    assert numbers == (1e-4, 1e-3, 0.5, 1000)
    for value in (float("inf"), float("-inf"), float("nan")):
        with pytest.raises(ConfigError, match=r"train\.lr': must be a finite number"):
            DealRosConfig().updated({"train.lr": value})
    with pytest.raises(ConfigError, match="expected a number, got 'fast'"):
        DealRosConfig().updated({"train.lr": "fast"})
    with pytest.raises(ConfigError, match=r"expected an integer, got 2\.5"):
        DealRosConfig().updated({"buffer.max_frames": 2.5})


def test_a_section_given_whole_is_merged_not_reset() -> None:
    cfg = DealRosConfig().updated({"train.batch_size": 4, "train": {"lr": 0.01}, "loss": {"deal": {"mu": 2.0}}})
    assert (cfg.train.batch_size, cfg.train.lr, cfg.loss.deal.mu) == (4, 0.01, 2.0)
    assert cfg.loss.deal.weight == DealRosConfig().loss.deal.weight
    with pytest.raises(ConfigError, match=r"train\.nope': unknown key"):
        DealRosConfig().updated({"train": {"nope": 1}})


def test_ros_parameter_files_honour_dotted_keys_and_refuse_unknown_sections(tmp_path) -> None:
    ros = tmp_path / "ros.yaml"
    ros.write_text("/**:\n  ros__parameters:\n    sync.slop: 0.05\n    keyframe.min_interval_s: 0.5\n"
                   "    qos_overrides:\n      /camera/color/image_raw:\n        subscription:\n          depth: 5\n"
                   "    use_sim_time: false\n    classes: [mug, box]\n    loss.deal.weight: 0.5\n"
                   "    train.lr: 1e-4\n    train:\n      batch_size: 2\n")
    cfg = load_config(ros, node_sections=NODE_SECTIONS)
    assert (cfg.loss.deal.weight, cfg.train.lr, cfg.train.batch_size, cfg.classes) == (0.5, 1e-4, 2, ["mug", "box"])
    for typo in ("trian:\n      lr: 0.1", "los.deal.weight: 0.5"):
        bad = tmp_path / "bad.yaml"
        bad.write_text(f"deal_trainer:\n  ros__parameters:\n    {typo}\n")
        with pytest.raises(ConfigError, match=r"ros__parameters\.(trian|los\.deal\.weight)': unknown key"):
            load_config(bad)
    plain = tmp_path / "plain.yaml"
    plain.write_text("loss.deal.weight: 0.25\n")
    assert load_config(plain).loss.deal.weight == 0.25
    with pytest.raises(ConfigError, match="is a folder"):
        load_config(tmp_path)


def _refused_values(key: ConfigKey) -> list:
    """Values just outside what the key declares: another type's choice, or one step past each bound."""
    bounds, values = key.setting.bounds, []
    if key.choices:
        values.append(max(key.choices) + 1 if isinstance(key.choices[0], int) else "nope")
    if bounds.low is not None:
        values.append(bounds.low if bounds.low_open else bounds.low - (1 if key.hint is int else 1e-3))
    if bounds.high is not None:
        values.append(bounds.high if bounds.high_open else bounds.high + (1 if key.hint is int else 1e-3))
    if bounds.step and bounds.low is not None:
        values.append(bounds.low + bounds.step // 2)
    return values


@pytest.mark.parametrize("key", config_keys(), ids=lambda key: key.key)
def test_validation_follows_each_declaration(key: ConfigKey) -> None:
    """Choices (Literal) and bounds (setting) are checked where declared; the message names the key."""
    assert key.setting.doc, "every field declares its description"
    for value in _refused_values(key):
        with pytest.raises(ConfigError, match=rf"'{re.escape(key.key)}': must be"):
            DealRosConfig().updated({key.key: value})


def test_setting_takes_one_bound_per_end() -> None:
    with pytest.raises(TypeError, match="one lower bound"):
        setting(1.0, "x", ge=0, gt=0)
    assert Bounds(32, 4096, step=16).text() == "a multiple of 16 in [32, 4096]"
    assert Bounds(0, 10, low_open=True).text() == "in (0, 10]" and Bounds(0).text() == ">= 0"
    assert not Bounds(0, 10, low_open=True).admits(0) and Bounds(0, 10, low_open=True).admits(10)


def test_a_key_given_twice_is_refused_with_both_lines(tmp_path) -> None:
    path = tmp_path / "twice.yaml"
    path.write_text("classes: [mug, box]\ntrain:\n  batch_size: 2\nloss: {}\ntrain:\n  batch_size: 8\n")
    with pytest.raises(ConfigError, match=r"'train' is given twice \(line 2 and line 5\)"):
        load_config(path)
    path.write_text("train: {batch_size: 2, batch_size: 8}\n")
    with pytest.raises(ConfigError, match="'batch_size' is given twice"):
        load_config(path)


def test_anchors_and_aliases_are_refused_before_the_tree_is_walked(tmp_path) -> None:
    levels = ['a: &a {x: 1, y: 1, z: 1}'] + [
        f"{b}: &{b} {{x: *{a}, y: *{a}, z: *{a}}}" for a, b in zip("abcde", "bcdef", strict=True)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(levels) + "\n")  # a small 'billion laughs'; 9 levels of 9 never finish walking
    with pytest.raises(ConfigError, match=r"bomb.yaml is not valid YAML: line 1: anchors and aliases \(&a\)"):
        load_config(path)
    path.write_text("classes: [mug, box]\ntrain: &t {batch_size: 2}\n")
    with pytest.raises(ConfigError, match="anchors and aliases"):
        load_config(path)


def test_a_checkpoint_whose_config_predates_the_sync_and_keyframe_sections_loads(tmp_path) -> None:
    """Checkpoints written before sync.* and keyframe.* were config sections store a config without them: they
    load with the sections' defaults."""
    import json

    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from deal_ros.config import KeyframeConfig, SyncConfig
    from deal_ros.models import build_cam_net
    from deal_ros.storage.checkpoint import load_checkpoint, save_checkpoint

    cfg = DealRosConfig(classes=["mug", "box"]).updated({"model.input_height": 32, "model.input_width": 48,
                                                          "keyframe.min_interval_s": 0.0})
    torch.manual_seed(0)
    path = save_checkpoint(tmp_path / "model.safetensors", build_cam_net(cfg.model, cfg.num_classes), cfg, 7)
    with safe_open(str(path), "pt") as handle:
        metadata = dict(handle.metadata())
    old = json.loads(metadata["config"])
    del old["sync"], old["keyframe"]
    metadata["config"] = json.dumps(old, sort_keys=True)
    save_file(load_file(str(path)), str(path), metadata=metadata)
    loaded = load_checkpoint(path)
    assert loaded.step == 7 and loaded.config.model.input_height == 32
    assert loaded.config.sync == SyncConfig() and loaded.config.keyframe == KeyframeConfig()
