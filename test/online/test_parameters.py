"""Parameter specs, validation and config/onboard.yaml (rclpy-free, CI)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from deal_ros.config import ConfigError, DealRosConfig
from deal_ros.online.parameters import (
    SEGMENTER,
    TRAINER,
    all_param_specs,
    check_parameter_update,
    config_from_parameters,
    config_param_specs,
    flatten_parameters,
    load_parameter_file,
    node_parameter_specs,
    parameter_value,
    render_parameter_file,
    spec_map,
)

ONBOARD_YAML = Path(__file__).resolve().parents[2] / "config" / "onboard.yaml"


def _config_keys() -> set[str]:
    def walk(obj, prefix):
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                yield from walk(value, f"{prefix}{f.name}.")
            else:
                yield f"{prefix}{f.name}"
    return set(walk(DealRosConfig(), ""))


def test_every_config_leaf_is_a_parameter_with_a_description():
    specs = {s.name: s for s in config_param_specs()}
    assert set(specs) == _config_keys()
    # type, choices, bounds, description and run-time flag come from each field's declaration (deal_ros/config)
    assert specs["loss.deal.weight"].description.startswith("lambda")
    assert "Backbone name" in specs["model.backbone"].description
    assert specs["model.backbone"].choices == ("mobilenet_v2", "resnet18", "resnet50")
    assert specs["loss.deal.edge_norm"].choices == ("max", "percentile", "fixed")
    assert all(s.description for s in specs.values())
    assert specs["model.input_height"].kind == "integer" and specs["model.input_height"].bounds.step == 16
    assert specs["classes"].kind == "string_array" and not specs["classes"].runtime
    assert specs["model.output_stride"].kind == "integer" and specs["model.output_stride"].choices == ("8", "16")
    lr = specs["train.lr"].bounds
    assert (lr.low, lr.low_open, lr.high) == (0.0, True, 10.0)


def test_open_bounds_and_integer_choices_are_enforced():
    specs = spec_map(TRAINER)
    with pytest.raises(ValueError, match=r"must be in \(0, 10\], got 0.0"):
        parameter_value(specs["train.lr"], 0.0)
    assert parameter_value(specs["train.lr"], 10) == 10.0
    with pytest.raises(ValueError, match="one of"):
        parameter_value(specs["model.output_stride"], 12)
    assert parameter_value(specs["model.output_stride"], 8) == 8
    assert "Range (0.0, 10.0]." in specs["train.lr"].describe()


def test_runtime_safe_set():
    specs = spec_map(TRAINER)
    for name in ("pseudo_label.fg_threshold", "loss.deal.weight", "train.lr", "train.max_steps_per_second", "tags"):
        assert specs[name].runtime, name
    for name in ("classes", "model.backbone", "model.input_height", "train.device", "resume", "sync.queue_size"):
        assert not specs[name].runtime, name


def test_node_specific_parameters():
    trainer = {s.name for s in all_param_specs(TRAINER)}
    segmenter = {s.name for s in all_param_specs(SEGMENTER)}
    assert "keyframe.min_interval_s" in trainer and "keyframe.min_interval_s" not in segmenter
    assert "reload_period_s" in segmenter and "reload_period_s" not in trainer
    assert "tags" in trainer and "tags" in segmenter
    # the trainer computes the trust (trust.*), the segmenter acts on it (mask.until_trusted)
    assert "trust.min_agreement" in trainer and "trust.min_agreement" not in segmenter
    assert "mask.until_trusted" in segmenter and "mask.until_trusted" not in trainer


def test_until_trusted_parameter():
    spec = spec_map(SEGMENTER)["mask.until_trusted"]
    assert spec.default == "mark" and spec.choices == ("mark", "withhold") and spec.runtime
    assert "One of: mark, withhold." in spec.describe()
    with pytest.raises(ValueError, match="one of"):
        parameter_value(spec, "publish")
    trust = spec_map(TRAINER)["trust.min_agreement"]
    assert trust.kind == "double" and trust.runtime and "Range [0.0, 1.0]." in trust.describe()


def test_parameter_value():
    specs = spec_map(TRAINER)
    assert parameter_value(specs["loss.deal.weight"], 2) == 2.0
    assert parameter_value(specs["tags"], "mug, box") == "mug, box"
    assert parameter_value(specs["tags"], b"") == []
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        parameter_value(specs["pseudo_label.fg_threshold"], -0.5)
    with pytest.raises(ValueError, match="one of"):
        parameter_value(spec_map(SEGMENTER)["mask.while_warming_up"], "sometimes")
    with pytest.raises(ValueError, match="expected an integer"):
        parameter_value(specs["train.batch_size"], 2.5)
    with pytest.raises(ValueError, match="multiple of 16"):
        parameter_value(specs["model.input_height"], 70)


def test_config_from_parameters_maps_dotted_keys():
    cfg = config_from_parameters({"model.input_height": 64, "model.input_width": 80, "loss.deal.weight": 1,
                                  "classes": ["a", "b"], "rgb_topic": "/x", "use_sim_time": True})
    assert cfg.model.input_height == 64 and cfg.loss.deal.weight == 1.0 and cfg.classes == ["a", "b"]
    with pytest.raises(ConfigError, match="pseudo_label"):
        config_from_parameters({"pseudo_label.bg_threshold": 0.9, "pseudo_label.fg_threshold": 0.5})


def test_check_parameter_update():
    cfg = DealRosConfig()
    ok = check_parameter_update(TRAINER, cfg, {"loss.deal.weight": 0.5, "keyframe.min_interval_s": 1.0,
                                               "mask.min_model_step": 5})
    assert ok.ok and ok.config_overrides == {"loss.deal.weight": 0.5, "keyframe.min_interval_s": 1.0}
    assert ok.node_values == {}  # mask.* is the segmenter's: the trainer ignores it, as rclpy's parameters
    segmenter = check_parameter_update(SEGMENTER, cfg, {"mask.min_model_step": 5, "points.stride": 4})
    assert segmenter.ok and segmenter.node_values == {"mask.min_model_step": 5, "points.stride": 4}
    assert "must be in [1, 64]" in check_parameter_update(SEGMENTER, cfg, {"points.stride": 0}).error
    refused = check_parameter_update(TRAINER, cfg, {"model.backbone": "resnet18"})
    assert not refused.ok and "cannot change at run time" in refused.error
    bad = check_parameter_update(TRAINER, cfg, {"pseudo_label.bg_threshold": 0.9})
    assert not bad.ok and "bg_threshold" in bad.error
    assert check_parameter_update(TRAINER, cfg, {"use_sim_time": True}).ok


def test_onboard_yaml_loads_and_every_key_is_known():
    cfg = load_parameter_file(ONBOARD_YAML)
    assert cfg.classes == ["mug", "box", "ball"]
    data = yaml.safe_load(ONBOARD_YAML.read_text())
    assert list(data) == ["/**"]
    flat = flatten_parameters(data["/**"]["ros__parameters"])
    known = {s.name for s in (*node_parameter_specs(), *config_param_specs())}
    assert set(flat) - known == set(), "unknown keys in config/onboard.yaml"
    assert known - set(flat) == set(), "keys missing from config/onboard.yaml"
    specs = {s.name: s for s in (*node_parameter_specs(), *config_param_specs())}
    for name, value in flat.items():  # the ROS types the nodes declare (a double written as 1 would be refused)
        spec = specs[name]
        if spec.kind == "double":
            assert isinstance(value, float), f"{name}: write {value}.0"
        parameter_value(spec, value)
    # every key has a comment line right above it
    lines = ONBOARD_YAML.read_text().splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and not stripped.endswith(":") and i > 0:
            assert lines[i - 1].strip().startswith("#"), f"no comment above: {line}"


def test_rendered_file_roundtrips(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(render_parameter_file({"classes": ["x"], "model.input_height": 64, "model.input_width": 80,
                                           "loss.isl.eps": 1e-5}))
    cfg = load_parameter_file(path)
    assert cfg.classes == ["x"] and cfg.model.input_height == 64 and cfg.loss.isl.eps == pytest.approx(1e-5)


REPO = Path(__file__).resolve().parents[2]


def _all_specs() -> dict:
    return {s.name: s for s in (*node_parameter_specs(), *config_param_specs())}


def test_onboard_yaml_holds_the_declared_defaults():
    """One source of defaults: the declaration. Regenerate the file with scripts/render_onboard_yaml.py."""
    flat = flatten_parameters(yaml.safe_load(ONBOARD_YAML.read_text())["/**"]["ros__parameters"])
    differ = {name: (value, spec.default) for name, spec in _all_specs().items()
              if (value := flat.get(name)) != spec.default}
    assert not differ, f"config/onboard.yaml (file, declared): {differ}; run scripts/render_onboard_yaml.py"


def _readme_cell_value(text: str, kind: str):
    text = text.strip()
    if text in ('""', "''"):
        return ""
    if kind == "string_array":
        return [part.strip() for part in text.strip("[]").split(",") if part.strip()]
    if kind == "bool":
        return {"true": True, "false": False}[text]
    if kind == "integer":
        return int(text)
    if kind == "double":
        return float(text)
    return text


def test_readme_parameter_table_agrees_with_the_declaration():
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("### Parameters"):readme.index("### Services")]
    specs = _all_specs()
    rows = [line.split("|")[1:-1] for line in table.splitlines() if line.startswith("| `")]
    assert len(rows) >= 25
    for name_cell, default_cell, runtime_cell, _ in rows:
        name = name_cell.strip().strip("`")
        spec = specs[name]
        assert _readme_cell_value(default_cell, spec.kind) == spec.default, f"README default of {name}"
        assert runtime_cell.strip() == ("yes" if spec.runtime else "no"), f"README run-time column of {name}"


def test_launch_arguments_do_not_restate_parameter_defaults():
    """A launch argument that sets a declared parameter is applied only when given (not '') and never restates
    the declared default: the parameter file (the declared defaults) is the one source."""
    import ast

    tree = ast.parse((REPO / "launch" / "onboard.launch.py").read_text())
    (table,) = [node.value for node in tree.body if isinstance(node, ast.Assign)
                and isinstance(node.targets[0], ast.Name) and node.targets[0].id == "ARGUMENTS"]
    defaults = {ast.literal_eval(row.elts[0]): row.elts[1] for row in table.elts}  # type: ignore[attr-defined]
    specs = _all_specs()
    set_by_argument = {}
    for call in ast.walk(tree):
        if isinstance(call, ast.Call) and getattr(call.func, "id", "") == "SetParameter":
            parameter, value = ast.literal_eval(call.args[0]), call.args[1]
            if parameter in specs and getattr(getattr(value, "func", None), "id", "") == "LaunchConfiguration":
                argument = ast.literal_eval(value.args[0])
                condition = next(k.value for k in call.keywords if k.arg == "condition")
                assert ast.unparse(condition) == f"_given({argument!r})", f"{parameter}: set only when {argument} given"
                default = defaults[argument]
                # '' = not given; any other default is the launch file's own choice, not a copy of the declared one
                assert isinstance(default, ast.Constant), argument
                assert default.value == "" or default.value != specs[parameter].default, argument
                set_by_argument[parameter] = argument
    assert set_by_argument == {"tags": "tags", "train.device": "device", "checkpoint.directory": "model_dir"}


def test_masks_warm_up_past_the_segmentation_head_warmup():
    assert spec_map(SEGMENTER)["mask.min_model_step"].default > DealRosConfig().loss.seg_warmup_steps
