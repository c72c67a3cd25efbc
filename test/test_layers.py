"""The package's rooms and the arrows between them: imports only go down, no circles, rclpy only in deal_ros.ros.

Rooms, bottom up: errors; the vocabulary (config, tags, file writing: light, no torch); the core (frames, depth,
labels, losses, models, training, inference, compute, checkpoints: knows nothing of messages); io (messages,
bags, ground-truth folders); online (what a node decides, without rclpy, shared with `deal-ros train`); the lab
(synthetic scenes, experiments, benchmarks: its own extra, never needed on the robot); the applications (cli,
ros). A module may import its own room and the rooms below, and the nodes never import the lab. The light modules
start in a fraction of a second (a refused option, `--help`, the nodes' environment check before torch): torch,
cv2 and rclpy stay out.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from deal_ros.cli import LAB_PACKAGES

PACKAGE = Path(__file__).resolve().parents[1] / "deal_ros"

ROOMS = ("errors", "vocabulary", "core", "io", "online", "lab", "apps")
PREFIXES = {  # module name prefix -> room (the longest prefix wins); every other deal_ros module is core
    "deal_ros.errors": "errors",
    "deal_ros.config": "vocabulary", "deal_ros.frames.tags": "vocabulary", "deal_ros.storage.files": "vocabulary",
    "deal_ros.io": "io", "deal_ros.online": "online", "deal_ros.lab": "lab",
    "deal_ros.cli": "apps", "deal_ros.ros": "apps", "deal_ros.__main__": "apps",
}
ROS_IMPORTS = {"rclpy", "message_filters", "sensor_msgs", "sensor_msgs_py", "std_msgs", "std_srvs", "diagnostic_msgs",
               "rcl_interfaces", "vision_msgs", "cv_bridge", "launch", "launch_ros", "ament_index_python"}
LIGHT_MODULES = ("deal_ros", "deal_ros.errors", "deal_ros.storage.files", "deal_ros.frames.tags", "deal_ros.config",
                 "deal_ros.cli", "deal_ros.io", "deal_ros.online", "deal_ros.online.tags",
                 "deal_ros.online.parameters", "deal_ros.io.pairs", "deal_ros.online.sync_health",
                 "deal_ros.online.slot", "deal_ros.online.startup", "deal_ros.online.status", "deal_ros.ros",
                 "deal_ros.ros.runner")
HEAVY = ("torch", "cv2", "rclpy", "rosbags", "matplotlib")
MAX_MODULE_LINES = 600


def room(module: str) -> str:
    """The room of a deal_ros module name (deal_ros.x.y)."""
    matches = [prefix for prefix in PREFIXES if module == prefix or module.startswith(prefix + ".")]
    return PREFIXES[max(matches, key=len)] if matches else "core"


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


def _graph() -> dict[str, set[str]]:
    """deal_ros module -> the deal_ros modules it imports (lazy and TYPE_CHECKING imports count)."""
    modules = {module_name(path): path for path in SOURCES}
    graph: dict[str, set[str]] = {}
    for mine, path in modules.items():
        graph[mine] = set()
        for name, _ in imports(path):
            while name not in modules and "." in name:  # from deal_ros.x import function -> deal_ros.x
                name = name.rsplit(".", 1)[0]
            if name in modules and name != mine and name != "deal_ros":
                graph[mine].add(name)
    return graph


def test_no_import_circles():
    graph, state, circles = _graph(), {}, []

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                circles.append(" -> ".join([*path[path.index(target):], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_the_nodes_and_the_library_never_import_the_lab():
    found = [f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}" for path in SOURCES
             if room(module_name(path)) != "lab" and not module_name(path).startswith("deal_ros.cli")
             for name, line in imports(path) if name == "deal_ros.lab" or name.startswith("deal_ros.lab.")]
    assert not found, "the lab imported outside it and the CLI:\n" + "\n".join(found)


def test_no_module_is_longer_than_a_newcomer_reads_at_once():
    long = [f"{path.relative_to(PACKAGE.parent)}: {n} lines" for path in SOURCES
            if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES]
    assert not long, f"modules over {MAX_MODULE_LINES} lines:\n" + "\n".join(long)


BLOCK_LAB = f"""
import sys
sys.modules.update(dict.fromkeys({LAB_PACKAGES!r}))  # None: import raises ImportError, find_spec says not found
"""
"""Run first in a subprocess: matplotlib, tqdm and scikit-image behave as not installed."""


def test_the_nodes_run_without_the_lab_extra(tmp_path):
    """What the nodes and `deal-ros train` / `label` use imports and trains with the lab extra's packages absent."""
    code = BLOCK_LAB + f"""
import numpy as np
import deal_ros.online.outputs, deal_ros.online.training_loop, deal_ros.io.bag, deal_ros.online.hot_reload
import deal_ros.cli.train, deal_ros.cli.label
from deal_ros.cli.progress import progress_bar
from deal_ros.config import DealRosConfig
from deal_ros.inference.segmenter import Segmenter
from deal_ros.training.trainer import OnlineTrainer
cfg = DealRosConfig(classes=["mug"]).updated({{"model.input_height": 64, "model.input_width": 64,
    "model.pretrained_path": "", "train.batch_size": 1, "checkpoint.directory": {str(tmp_path)!r}}})
trainer = OnlineTrainer(cfg)
rng = np.random.default_rng(0)
trainer.add_frame(rng.integers(0, 255, (64, 64, 3), np.uint8), rng.uniform(0.5, 2, (64, 64)).astype(np.float32),
                  ["mug"])
for _ in progress_bar(range(2), desc="steps"):
    trainer.train_step()
from deal_ros.cli import main
assert main(["demo", "--steps", "1"]) == 2  # one line naming the lab extra, no traceback
print(Segmenter(cfg, trainer.model)(np.zeros((64, 64, 3), np.uint8)).mask.shape)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("(64, 64)")
    assert "deal-ros demo: error: needs matplotlib, which comes with the lab extra: pip install 'deal_ros[lab]'" in (
        result.stderr)


@pytest.mark.parametrize("module", LIGHT_MODULES)
def test_light_modules_stay_light(module):
    code = f"import json, sys; import {module}; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert json.loads(result.stdout) == [], f"importing {module} loads {result.stdout.strip()}"
