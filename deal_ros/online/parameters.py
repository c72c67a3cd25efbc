"""ROS parameters of the nodes: every DealRosConfig leaf, and the nodes' own parameters, one spec each.

Why a spec table without rclpy: the nodes declare exactly these (type, range, description,
read-only), CI checks them, and ``config/onboard.yaml`` is checked against them. Every DealRosConfig
leaf becomes a ROS parameter under its dotted key (``loss.deal.weight``), so the parameter file
is the same tree ``deal_ros.config.load_config`` reads. The nodes' own parameters (what means nothing
offline: the tags in view now, outputs, periods) are the dataclass NodeParameters here. Both are declared
with ``deal_ros.config.setting`` (type, choices, range, description, run-time flag) and coerced by
``deal_ros.config.fields.coerce``: one declaration, one check, whichever way a value comes.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from deal_ros.config import Bounds, ConfigError, ConfigKey, DealRosConfig, choices_of, load_config, setting
from deal_ros.config.fields import check_value, coerce, config_keys, section_keys
from deal_ros.online.tags import tags_parameter_value

TRAINER = "trainer"
SEGMENTER = "segmenter"
BOTH = frozenset({TRAINER, SEGMENTER})


# -- the nodes' own parameters --------------------------------------------------------------------

@dataclass
class MaskParameters:
    """When the segmenter's masks are worth publishing."""

    min_model_step: int = setting(
        100, """Masks from weights trained fewer steps than this are 'warming up' (segmenter_status state,
        deal/mask_info warming_up): an untrained head paints nearly everything one class. Keep it above
        loss.seg_warmup_steps (the segmentation head trains only after those).""", ge=0, le=100_000_000,
        runtime=True)
    while_warming_up: Literal["withhold", "publish"] = setting(
        "withhold", """withhold: deal/mask, deal/confidence and deal/points are not published while warming up
        (overlay, pseudo_label and deal/mask_info are); publish: they are, flagged warming_up in deal/mask_info.""",
        runtime=True)
    until_trusted: Literal["mark", "withhold"] = setting(
        "mark", """Before the trainer trusts the masks of the weights in use (its status field masks_trusted; trust.*
        settings): mark = publish them with trusted false in deal/mask_info; withhold = deal/mask, deal/confidence
        and deal/points are not published until then (overlay, pseudo_label and deal/mask_info are). Standalone, the
        trust is the checkpoint's, recorded when the trainer saved it.""", runtime=True)


@dataclass
class PointsParameters:
    """The semantic point cloud."""

    stride: int = setting(2, "Use every N-th pixel (rows and columns) for the point cloud.", ge=1, le=64,
                          runtime=True)


@dataclass
class NodeParameters:
    """The nodes' own parameters beside DealRosConfig: what the nodes do at run time and `deal-ros train` has no
    use for (the pairing and keyframe settings, which both share, are DealRosConfig's sync and keyframe)."""

    tags: list[str] = setting(
        [], """Objects in view now: a string list ([mug, box]) or one comma-separated string; '' = none in view.
        Unknown names are refused.""", runtime=True)
    resume: bool = setting(True, "Continue from <checkpoint.directory>/model.safetensors when it exists.")
    status_period_s: float = setting(1.0, "Period (s) of the status topic and /diagnostics.", ge=0.05, le=60)
    reload_period_s: float = setting(
        2.0, "Standalone segmenter: poll the checkpoint this often (s) and hot-reload newer weights (0 = off).",
        ge=0, le=3600, runtime=True)
    overlay_alpha: float = setting(0.5, "Opacity of the class colours on the overlay image.", ge=0, le=1,
                                   runtime=True)
    points: PointsParameters = field(default_factory=PointsParameters)
    publish_pseudo_label: bool = setting(
        True, "Publish pseudo_label when tags are known (costs a refinement).", runtime=True)
    mask: MaskParameters = field(default_factory=MaskParameters)
    weights_sync_steps: int = setting(
        1, """One process: hand the trained weights to the segmenter's own copy every N training steps (a copy
        between steps; inference never waits for training).""", ge=1, le=100_000, runtime=True)
    inference_priority: float = setting(
        0.5, """One process on the CPU: a training step waits at its next layer while the segmenter processes a
        frame, for at most this share of the step's time (0 = never; 0.5 = a segmenter busy all the time and
        training wait for each other about equally). No effect on CUDA (the segmenter has its own stream
        there).""", ge=0, le=0.95, runtime=True)


ONE_NODE: dict[str, str] = {
    "keyframe": TRAINER, "resume": TRAINER, "weights_sync_steps": TRAINER, "inference_priority": TRAINER,
    "reload_period_s": SEGMENTER, "overlay_alpha": SEGMENTER, "points": SEGMENTER,
    "publish_pseudo_label": SEGMENTER, "mask": SEGMENTER, "trust": TRAINER,
}
"""Parameters (by their first name part) that only one node declares; both declare every other."""

DYNAMIC = frozenset({"tags"})
"""Parameters of more than one type (rclpy dynamic typing): tags, a string list or one comma-separated string
(read by the one lenient tags reader, deal_ros.frames.tags.parse_tags)."""


@dataclass(frozen=True)
class ParamSpec:
    """One ROS parameter as a node declares it, derived from its field's declaration (deal_ros.config.setting)."""

    name: str
    default: Any
    kind: str
    """bool, integer, double, string or string_array (mapped to rcl_interfaces ParameterType by the node)."""
    description: str
    hint: Any
    """The field's type, which deal_ros.config.fields.coerce converts a value to."""
    bounds: Bounds = field(default_factory=Bounds)
    """An open end must differ from the value (the ROS descriptor's range is closed; the node checks)."""
    choices: tuple[str, ...] = ()
    """The allowed values as text (as ROS shows them); an integer parameter's are its numbers written out."""
    runtime: bool = False
    """Safe to change while running (else the descriptor is read-only: restart with a new value)."""
    config_key: bool = False
    """A DealRosConfig dotted key (else a node parameter)."""
    nodes: frozenset[str] = BOTH
    dynamic: bool = False
    """Accept more than one type (tags: a string list or one comma-separated string)."""

    def describe(self) -> str:
        """Description with the choices and range spelled out (shown by `ros2 param describe`)."""
        text, bounds = self.description, self.bounds
        if self.choices:
            text += f" One of: {', '.join(self.choices)}."
        if bounds.low is not None and bounds.high is not None:
            text += (f" Range {'(' if bounds.low_open else '['}{bounds.low}, {bounds.high}"
                     f"{')' if bounds.high_open else ']'}.")
        elif bounds:
            text += f" Must be {bounds.text()}."
        if not self.runtime:
            text += " Read-only at run time."
        return text


def _kind_of(hint: Any) -> str:
    if typing.get_origin(hint) is list:
        return "string_array"
    choices = choices_of(hint)
    kind = type(choices[0]) if choices else hint
    return {bool: "bool", int: "integer", float: "double", str: "string"}[kind]


def _spec_of(key: ConfigKey, config_key: bool) -> ParamSpec:
    kind, bounds = _kind_of(key.hint), key.setting.bounds
    if kind == "double":  # a double parameter's range is written with floats ([0.0, 5.0])
        bounds = Bounds(None if bounds.low is None else float(bounds.low),
                        None if bounds.high is None else float(bounds.high), bounds.low_open, bounds.high_open,
                        bounds.step)
    dynamic = key.key in DYNAMIC
    default = tags_parameter_value(key.default) if dynamic else key.default
    return ParamSpec(
        name=key.key, default=list(default) if isinstance(default, list) else default, kind=kind,
        description=key.setting.doc, hint=key.hint, bounds=bounds, choices=tuple(str(c) for c in key.choices),
        runtime=key.setting.runtime, config_key=config_key,
        nodes=frozenset({ONE_NODE[key.key.split(".")[0]]}) if key.key.split(".")[0] in ONE_NODE else BOTH,
        dynamic=dynamic,
    )


@lru_cache(maxsize=1)
def config_param_specs() -> tuple[ParamSpec, ...]:
    """One spec per DealRosConfig leaf, everything taken from its declaration (deal_ros.config.setting)."""
    return tuple(_spec_of(key, config_key=True) for key in config_keys())


@lru_cache(maxsize=1)
def node_parameter_specs() -> tuple[ParamSpec, ...]:
    """One spec per NodeParameters leaf: the nodes' own parameters, both nodes'."""
    return tuple(_spec_of(key, config_key=False) for key in section_keys(NodeParameters))


ROS_STANDARD_PARAMETERS = ("use_sim_time", "qos_overrides", "start_type_description_service")
"""Parameters every ROS 2 node may have in its parameter file (not ours, not config)."""

NODE_SECTIONS = frozenset({spec.name.split(".")[0] for spec in node_parameter_specs()}
                          | set(ROS_STANDARD_PARAMETERS))
"""Top-level names a ROS parameter file may hold beside the config (load_config's node_sections)."""


def load_parameter_file(path: str | Path, overrides: dict[str, Any] | None = None,
                        defaults: Mapping[str, Any] | None = None) -> DealRosConfig:
    """A config file or a ROS 2 parameter file (config/onboard.yaml), as the nodes read it: their own
    parameters beside the config are allowed, anything else unknown is refused. `defaults`: dotted keys
    that apply where the file gives none (load_config)."""
    return load_config(path, overrides, NODE_SECTIONS, defaults)


def node_param_specs(node: str) -> tuple[ParamSpec, ...]:
    """The node's own parameters (not DealRosConfig keys)."""
    return tuple(s for s in node_parameter_specs() if node in s.nodes)


def all_param_specs(node: str) -> tuple[ParamSpec, ...]:
    """Everything `node` declares: its own parameters, then the DealRosConfig keys it reads."""
    return node_param_specs(node) + tuple(s for s in config_param_specs() if node in s.nodes)


def spec_map(node: str) -> dict[str, ParamSpec]:
    return {s.name: s for s in all_param_specs(node)}


# -- validation ----------------------------------------------------------------------------------

def parameter_value(spec: ParamSpec, value: Any) -> Any:
    """One value as rclpy gives it, coerced and checked as a config value is (deal_ros.config.fields.coerce, the
    declared choices and bounds); returns it normalised or raises ConfigError. A dynamic parameter's string is
    returned as it is (the tags reader reads it)."""
    if spec.dynamic and isinstance(value, str):
        return value
    if spec.kind == "string_array" and isinstance(value, (bytes, bytearray)):
        value = []  # rclpy types an empty list as a byte array
    value = coerce(value, spec.hint, spec.name)
    check_value(spec.name, value, spec.hint, spec.bounds)
    return value


def config_from_parameters(values: Mapping[str, Any], base: DealRosConfig | None = None) -> DealRosConfig:
    """The DealRosConfig of a node from its parameter values (unknown and node keys ignored); raises ConfigError."""
    specs = {s.name: s for s in config_param_specs()}
    overrides = {}
    for name, value in values.items():
        spec = specs.get(name)
        if spec is None:
            continue
        overrides[name] = parameter_value(spec, value)
    return (base or DealRosConfig()).updated(overrides)


@dataclass
class ParameterUpdate:
    """A validated run-time change: DealRosConfig overrides and node values, or the reason it is refused."""

    config_overrides: dict[str, Any]
    node_values: dict[str, Any]
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


def check_parameter_update(node: str, current: DealRosConfig, changes: Mapping[str, Any]) -> ParameterUpdate:
    """Validate a `ros2 param set` (all or nothing): run-time safe, in range, and a valid DealRosConfig."""
    specs = spec_map(node)
    update = ParameterUpdate({}, {})
    for name, value in changes.items():
        spec = specs.get(name)
        if spec is None:
            continue  # use_sim_time and other parameters rclpy owns
        if not spec.runtime:
            update.error = (f"parameter '{name}' cannot change at run time; set it in the parameter file and "
                            "restart the node")
            return update
        try:
            value = parameter_value(spec, value)
        except ConfigError as exc:
            update.error = str(exc)
            return update
        (update.config_overrides if spec.config_key else update.node_values)[name] = value
    if update.config_overrides:
        try:
            current.updated(update.config_overrides)
        except ConfigError as exc:
            update.error = str(exc)
    return update


# -- the parameter file ----------------------------------------------------------------------------

def _yaml_scalar(value: Any) -> str:
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = repr(value)
        if "inf" in text or "nan" in text:
            return {"inf": ".inf", "-inf": "-.inf"}.get(text, ".nan")
        mantissa, _, exponent = text.partition("e")
        mantissa = mantissa if "." in mantissa else mantissa + ".0"  # YAML 1.1 floats need the dot
        return mantissa + (f"e{exponent}" if exponent else "")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(json.dumps(v) for v in value) + "]"
    return json.dumps(value)


def render_parameter_file(values: Mapping[str, Any] | None = None, node_pattern: str = "/**") -> str:
    """A ROS 2 parameter file with every parameter of both nodes, each preceded by its description."""
    values = dict(values or {})
    names_seen: set[str] = set()
    specs: list[ParamSpec] = []
    for spec in (*node_parameter_specs(), *config_param_specs()):
        if spec.name not in names_seen:
            names_seen.add(spec.name)
            specs.append(spec)
    lines = [f"{node_pattern}:", "  ros__parameters:"]
    open_path: list[str] = []
    for spec in specs:
        *parents, leaf = spec.name.split(".")
        common = 0
        while common < min(len(parents), len(open_path)) and parents[common] == open_path[common]:
            common += 1
        open_path = open_path[:common]
        for part in parents[common:]:
            lines.append("    " + "  " * len(open_path) + f"{part}:")
            open_path.append(part)
        indent = "    " + "  " * len(open_path)
        where = "" if spec.nodes == BOTH else f" [{', '.join(sorted(spec.nodes))} only]"
        lines.append(f"{indent}# {spec.describe()}{where}")
        lines.append(f"{indent}{leaf}: {_yaml_scalar(values.get(spec.name, spec.default))}")
    return "\n".join(lines) + "\n"


def flatten_parameters(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested ros__parameters -> dotted names, as rclpy sees them."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten_parameters(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
