"""The package's rooms and the arrows between them: imports only go down, rclpy only in deal_ros.ros.

Rooms, bottom up: errors; the vocabulary (files, tags, config, YAML reading); the core (networks, losses, training,
inference, depth, checkpoints: knows nothing of messages); io (messages, bags); online (what a node
decides, without rclpy, shared with `deal-ros train`); the applications (cli, ros, benchmarks). A
module may import its own room and the rooms below. The light modules start in a fraction of a second
(a refused option, `--help`, the nodes' environment check before torch): torch, cv2 and rclpy stay out.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "deal_ros"

ROOMS = ("errors", "vocabulary", "core", "io", "online", "apps")
VOCABULARY = {"files", "tags", "config", "strict_yaml"}
APPS = {"cli", "ros", "benchmarks", "__main__"}
ROS_IMPORTS = {"rclpy", "message_filters", "sensor_msgs", "sensor_msgs_py", "std_msgs", "std_srvs", "diagnostic_msgs",
               "rcl_interfaces", "vision_msgs", "cv_bridge", "launch", "launch_ros", "ament_index_python"}
LIGHT_MODULES = ("deal_ros", "deal_ros.errors", "deal_ros.files", "deal_ros.tags", "deal_ros.config", "deal_ros.cli",
                 "deal_ros.io", "deal_ros.online", "deal_ros.online.tags", "deal_ros.online.parameters",
                 "deal_ros.online.pairs", "deal_ros.online.sync_health", "deal_ros.online.slot",
                 "deal_ros.online.startup", "deal_ros.online.status", "deal_ros.ros", "deal_ros.ros.runner")
HEAVY = ("torch", "cv2", "rclpy", "rosbags", "matplotlib")


def room(module: str) -> str:
    """The room of a deal_ros module name (deal_ros.x.y)."""
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    if top == "errors":
        return "errors"
    if top in VOCABULARY:
        return "vocabulary"
    if top in ("io", "online"):
        return top
    if top in APPS:
        return "apps"
    return "core"


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> list[tuple[str, int]]:
    """Every module `path` imports (at any depth: lazy imports count too), with its line."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += [(node.module, node.lineno)]
            if node.module == "deal_ros":  # from deal_ros import x
                found += [(f"deal_ros.{alias.name}", node.lineno) for alias in node.names]
    return found


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_imports_only_go_down():
    upward = []
    for path in SOURCES:
        mine = module_name(path)
        for name, line in imports(path):
            if name == "deal_ros" or not name.startswith("deal_ros."):
                continue
            if ROOMS.index(room(name)) > ROOMS.index(room(mine)):
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({room(mine)}) imports {name} ({room(name)})")
    assert not upward, "imports up the layers:\n" + "\n".join(upward)


def test_only_the_ros_package_imports_rclpy():
    outside = []
    for path in SOURCES:
        if module_name(path).startswith("deal_ros.ros"):
            continue
        for name, line in imports(path):
            if name.split(".")[0] in ROS_IMPORTS:
                outside.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}")
    assert not outside, "ROS imports outside deal_ros.ros:\n" + "\n".join(outside)


@pytest.mark.parametrize("module", LIGHT_MODULES)
def test_light_modules_stay_light(module):
    code = f"import json, sys; import {module}; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert json.loads(result.stdout) == [], f"importing {module} loads {result.stdout.strip()}"
