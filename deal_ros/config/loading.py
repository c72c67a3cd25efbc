"""Reading a config file: a plain YAML tree or a ROS 2 parameter file, dotted keys allowed in both."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from deal_ros.config.fields import ConfigError, check
from deal_ros.config.schema import DealRosConfig


def load_config(path: str | Path, overrides: dict[str, Any] | None = None,
                node_sections: Collection[str] = (), defaults: Mapping[str, Any] | None = None) -> DealRosConfig:
    """Load a YAML config: a plain tree, or a ROS 2 parameter file (first `ros__parameters` found).

    Dotted keys (``loss.deal.weight: 0.5``, legal in ROS 2 parameter files) are honoured in both; a key
    that is neither a config section nor in `node_sections` (the top-level names of the nodes' own and
    ROS's standard parameters: deal_ros.online.parameters.NODE_SECTIONS) is refused, naming it.
    `defaults` (dotted keys) apply where the file gives no value: a command's own defaults under the file's.
    """
    import yaml

    from deal_ros.config.strict_yaml import load_yaml

    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config file {path} is a folder; give a YAML file")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = load_yaml(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {' '.join(str(exc).split())}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    try:
        tree = _nest_dotted(_strip_ros_parameters(data, node_sections), "")
        if isinstance(tree, dict):
            for dotted, value in (defaults or {}).items():
                _set_if_absent(tree, dotted.split("."), value)
        cfg = DealRosConfig.from_dict(tree)
        return cfg.updated(overrides) if overrides else cfg
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _nest_dotted(data: Any, prefix: str) -> Any:
    """{'loss.deal.weight': 0.5, 'loss': {'deal': {'mu': 2}}} -> one nested tree (ROS 2 parameter files allow both)."""
    if not isinstance(data, dict):
        return data
    tree: dict[str, Any] = {}
    for key, value in data.items():
        key = str(key)
        *parents, leaf = key.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
            check(isinstance(node, dict), prefix + key, f"'{part}' is both a value and a section")
        value = _nest_dotted(value, prefix + key + ".")
        if isinstance(node.get(leaf), dict) and isinstance(value, dict):
            _merge_new(node[leaf], value)
        else:
            check(leaf not in node, prefix + key, "given twice")
            node[leaf] = value
    return tree


def _set_if_absent(tree: dict[str, Any], path: list[str], value: Any) -> None:
    """tree[path[0]][path[1]]... = value unless the tree has a value there (a non-mapping section is left to
    from_dict to refuse)."""
    node = tree
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            return
    node.setdefault(path[-1], value)


def _merge_new(node: dict[str, Any], value: dict[str, Any]) -> None:
    for name, item in value.items():
        if isinstance(node.get(name), dict) and isinstance(item, dict):
            _merge_new(node[name], item)
        else:
            node[name] = item


def _strip_ros_parameters(data: Any, node_sections: Collection[str]) -> Any:
    """Return the DealRosConfig subtree of a ROS 2 parameter file, or `data` unchanged.

    The nodes' own parameters (top-level names in `node_sections`) are dropped; any other key that is not
    a config section (a misspelled 'trian', a dotted 'los.deal.weight') is refused instead of silently
    leaving the defaults in place.
    """
    if not isinstance(data, dict):
        return data
    for node_name, node_params in data.items():
        if isinstance(node_params, dict) and "ros__parameters" in node_params:
            params = node_params["ros__parameters"] or {}
            check(isinstance(params, dict), f"{node_name}.ros__parameters", "expected a mapping")
            known = {f.name for f in dataclasses.fields(DealRosConfig)}
            kept: dict[str, Any] = {}
            for key, value in params.items():
                section = str(key).split(".")[0]
                if section in known:
                    kept[str(key)] = value
                    continue
                check(section in node_sections, f"{node_name}.ros__parameters.{key}",
                       f"unknown key: neither a config section {sorted(known)} nor a node parameter")
            return kept
    return data


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """['loss.deal.weight=0.5', ...] -> {'loss.deal.weight': 0.5}; values are YAML scalars."""
    import yaml

    from deal_ros.config.strict_yaml import load_yaml

    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. train.batch_size=4")
        try:
            overrides[key.strip()] = load_yaml(text) if text.strip() else text
        except yaml.YAMLError:
            overrides[key.strip()] = text
    return overrides
