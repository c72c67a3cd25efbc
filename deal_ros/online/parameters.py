"""ROS parameters of the nodes: one spec per parameter, derived from DealRosConfig plus the node's own.

Why a spec table without rclpy: the nodes declare exactly these (type, range, description,
read-only), CI checks them, and ``config/onboard.yaml`` is checked against them. Every DealRosConfig
leaf becomes a ROS parameter under its dotted key (``loss.deal.weight``), so the parameter file
is the same tree ``deal_ros.config.load_config`` reads. Type, choices, range, description and the
run-time flag are read from each field's declaration (``deal_ros.config.setting``); the nodes' own
parameters are declared here, in NODE_PARAMS.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from deal_ros.config import Bounds, ConfigError, ConfigKey, DealRosConfig, choices_of, config_keys, load_config

TRAINER = "trainer"
SEGMENTER = "segmenter"
BOTH = frozenset({TRAINER, SEGMENTER})

@dataclass(frozen=True)
class ParamSpec:
    """One ROS parameter: what the node declares and how a change is validated."""

    name: str
    default: Any
    kind: str
    """bool, integer, double, string or string_array (mapped to rcl_interfaces ParameterType by the node)."""
    description: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    """An open end: the value must differ from it (the ROS descriptor's range is closed; the node checks)."""
    step: int = 0
    """Integer step of the range (0 = any value)."""
    choices: tuple[str, ...] = ()
    """The allowed values as text (as ROS shows them); an integer parameter's are its numbers written out."""
    runtime: bool = False
    """Safe to change while running (else the descriptor is read-only: restart with a new value)."""
    config_key: bool = False
    """A DealRosConfig dotted key (else a node parameter)."""
    nodes: frozenset[str] = BOTH
    dynamic: bool = False
    """Accept more than one type (tags: a string list or one comma-separated string)."""

    @property
    def bounds(self) -> Bounds:
        return Bounds(self.low, self.high, self.low_open, self.high_open, self.step)

    def describe(self) -> str:
        """Description with the choices and range spelled out (shown by `ros2 param describe`)."""
        text = self.description
        if self.choices:
            text += f" One of: {', '.join(self.choices)}."
        if self.low is not None and self.high is not None:
            text += f" Range {'(' if self.low_open else '['}{self.low}, {self.high}{')' if self.high_open else ']'}."
        elif self.low is not None or self.high is not None:
            text += f" Must be {self.bounds.text()}."
        if not self.runtime:
            text += " Read-only at run time."
        return text


# -- DealRosConfig keys -----------------------------------------------------------------------------

def _kind_of(hint: Any) -> str:
    if typing.get_origin(hint) is list:
        return "string_array"
    choices = choices_of(hint)
    kind = type(choices[0]) if choices else hint
    return {bool: "bool", int: "integer", float: "double", str: "string"}[kind]


def _spec_of(key: ConfigKey) -> ParamSpec:
    kind, bounds = _kind_of(key.hint), key.setting.bounds
    number = float if kind == "double" else (lambda v: v)
    return ParamSpec(
        name=key.key, default=list(key.default) if isinstance(key.default, list) else key.default, kind=kind,
        description=key.setting.doc, low=None if bounds.low is None else number(bounds.low),
        high=None if bounds.high is None else number(bounds.high), low_open=bounds.low_open,
        high_open=bounds.high_open, step=bounds.step, choices=tuple(str(c) for c in key.choices),
        runtime=key.setting.runtime, config_key=True,
    )


@lru_cache(maxsize=1)
def config_param_specs() -> tuple[ParamSpec, ...]:
    """One spec per DealRosConfig leaf, everything taken from its declaration (deal_ros.config.setting)."""
    return tuple(_spec_of(key) for key in config_keys())


# -- node parameters ------------------------------------------------------------------------------

NODE_PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("tags", "", "string_array",
              "Objects in view now: a string list ([mug, box]) or one comma-separated string; '' = none in view. "
              "Unknown names are refused.", runtime=True, dynamic=True),
    ParamSpec("sync.queue_size", 10, "integer", "ApproximateTimeSynchronizer queue size per input.",
              low=1, high=1000),
    ParamSpec("sync.slop", 0.05, "double", "Max stamp difference (s) of an RGB/depth pair.", low=0.0, high=5.0),
    ParamSpec("sync.stale_timeout_s", 5.0, "double",
              "Warn when no synchronised pair arrived for this long (s) while inputs are published.",
              low=0.5, high=3600.0, runtime=True),
    ParamSpec("keyframe.min_interval_s", 0.5, "double",
              "A frame enters the training buffer at most this often (s).", low=0.0, high=3600.0,
              runtime=True, nodes=frozenset({TRAINER})),
    ParamSpec("keyframe.max_interval_s", 5.0, "double",
              "Take a frame after this long (s) even without motion (0 = only on motion).", low=0.0, high=3600.0,
              runtime=True, nodes=frozenset({TRAINER})),
    ParamSpec("keyframe.motion_threshold", 0.04, "double",
              "Mean absolute grey difference (0..1) of 32x24 thumbnails that counts as new view.",
              low=0.0, high=1.0, runtime=True, nodes=frozenset({TRAINER})),
    ParamSpec("resume", True, "bool", "Continue from <checkpoint.directory>/model.safetensors when it exists.",
              nodes=frozenset({TRAINER})),
    ParamSpec("status_period_s", 1.0, "double", "Period (s) of the status topic and /diagnostics.",
              low=0.05, high=60.0),
    ParamSpec("reload_period_s", 2.0, "double",
              "Standalone segmenter: poll the checkpoint this often (s) and hot-reload newer weights (0 = off).",
              low=0.0, high=3600.0, runtime=True, nodes=frozenset({SEGMENTER})),
    ParamSpec("overlay_alpha", 0.5, "double", "Opacity of the class colours on the overlay image.",
              low=0.0, high=1.0, runtime=True, nodes=frozenset({SEGMENTER})),
    ParamSpec("points.stride", 2, "integer", "Use every N-th pixel (rows and columns) for the point cloud.",
              low=1, high=64, runtime=True, nodes=frozenset({SEGMENTER})),
    ParamSpec("publish_pseudo_label", True, "bool", "Publish pseudo_label when tags are known (costs a refinement).",
              runtime=True, nodes=frozenset({SEGMENTER})),
    ParamSpec("mask.min_model_step", 200, "integer",
              "Masks from weights trained fewer steps than this are 'warming up' (segmenter_status state, "
              "deal/mask_info warming_up): an untrained head paints nearly everything one class. Keep it above "
              "loss.seg_warmup_steps (the segmentation head trains only after those).",
              low=0, high=100_000_000, runtime=True, nodes=frozenset({SEGMENTER})),
    ParamSpec("mask.while_warming_up", "withhold", "string",
              "withhold: deal/mask, deal/confidence and deal/points are not published while warming up (overlay, "
              "pseudo_label and deal/mask_info are); publish: they are, flagged warming_up in deal/mask_info.",
              choices=("withhold", "publish"), runtime=True, nodes=frozenset({SEGMENTER})),
    ParamSpec("weights_sync_steps", 1, "integer",
              "One process: hand the trained weights to the segmenter's own copy every N training steps (a copy "
              "between steps; inference never waits for training).", low=1, high=100_000, runtime=True,
              nodes=frozenset({TRAINER})),
    ParamSpec("inference_priority", 0.5, "double",
              "One process on the CPU: a training step waits at its next layer while the segmenter processes a "
              "frame, for at most this share of the step's time (0 = never; 0.5 = a segmenter busy all the time "
              "and training wait for each other about equally). No effect on CUDA (the segmenter has its own "
              "stream there).", low=0.0, high=0.95, runtime=True, nodes=frozenset({TRAINER})),
)


ROS_STANDARD_PARAMETERS = ("use_sim_time", "qos_overrides", "start_type_description_service")
"""Parameters every ROS 2 node may have in its parameter file (not ours, not config)."""

NODE_SECTIONS = frozenset({spec.name.split(".")[0] for spec in NODE_PARAMS} | set(ROS_STANDARD_PARAMETERS))
"""Top-level names a ROS parameter file may hold beside the config (load_config's node_sections)."""


def load_parameter_file(path: str | Path, overrides: dict[str, Any] | None = None) -> DealRosConfig:
    """A config file or a ROS 2 parameter file (config/onboard.yaml), as the nodes read it: their own
    parameters beside the config are allowed, anything else unknown is refused."""
    return load_config(path, overrides, NODE_SECTIONS)


def node_param_specs(node: str) -> tuple[ParamSpec, ...]:
    """The node's own parameters (not DealRosConfig keys)."""
    return tuple(s for s in NODE_PARAMS if node in s.nodes)


def all_param_specs(node: str) -> tuple[ParamSpec, ...]:
    """Everything `node` declares: its own parameters, then every DealRosConfig key."""
    return node_param_specs(node) + config_param_specs()


def spec_map(node: str) -> dict[str, ParamSpec]:
    return {s.name: s for s in all_param_specs(node)}


# -- validation ----------------------------------------------------------------------------------

def coerce_value(spec: ParamSpec, value: Any) -> Any:
    """Check one value against its spec (type, range, choices); returns it normalised or raises ConfigError."""
    name = spec.name
    if spec.kind == "double" and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if spec.kind == "string_array":
        if spec.dynamic and isinstance(value, str):
            return value
        if isinstance(value, (bytes, bytearray)) or (isinstance(value, (list, tuple)) and not value):
            return []  # rclpy types an empty list as a byte array
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"parameter '{name}': expected a list of strings, got {value!r}")
        return [str(v) for v in value]
    expected: type[Any] = {"bool": bool, "integer": int, "double": float, "string": str}[spec.kind]
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise ConfigError(f"parameter '{name}': expected {spec.kind}, got {type(value).__name__} {value!r}")
    if spec.choices and str(value) not in spec.choices:
        raise ConfigError(f"parameter '{name}': must be one of {list(spec.choices)}, got {value!r}")
    bounds = spec.bounds
    if bounds.too_low(value):
        raise ConfigError(f"parameter '{name}': {value} is below the minimum {spec.low}"
                          + (" (excluded)" if spec.low_open else ""))
    if bounds.too_high(value):
        raise ConfigError(f"parameter '{name}': {value} is above the maximum {spec.high}"
                          + (" (excluded)" if spec.high_open else ""))
    if spec.kind == "integer" and bounds.off_grid(value):
        raise ConfigError(f"parameter '{name}': {value} must be {spec.low} + a multiple of {spec.step}")
    return value


def config_from_parameters(values: Mapping[str, Any], base: DealRosConfig | None = None) -> DealRosConfig:
    """The DealRosConfig of a node from its parameter values (unknown and node keys ignored); raises ConfigError."""
    specs = {s.name: s for s in config_param_specs()}
    overrides = {}
    for name, value in values.items():
        spec = specs.get(name)
        if spec is None:
            continue
        overrides[name] = coerce_value(spec, value)
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
            value = coerce_value(spec, value)
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
    for spec in (*NODE_PARAMS, *config_param_specs()):
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
