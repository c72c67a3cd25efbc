"""Helpers and fixtures of the command-line tests: real bags (bagfactory), one trained checkpoint, one labelled bag.

Training and labelling run once per session through the installed `deal-ros` command; the tests
then check their products and run the cheaper cases in-process. Inputs are tiny (48x64 frames,
32x48 network input, batch 2) so that the whole folder runs in about a minute on 2 busy cores.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "io"))

from bagfactory import WrittenBag, write_rgbd_bag

from deal_ros.lab.synthetic import make_tabletop_scenes

CLASSES = ["mug", "box"]
SIZE = (48, 64)
NUM_FRAMES = 6
TINY = ["--set", "model.input_height=32", "--set", "model.input_width=48", "--set", "train.batch_size=2",
        "--set", "train.device=cpu", "--set", "model.seg_head_channels=8"]
"""Config overrides that make a training step cheap."""
DEAL_ROS = shutil.which("deal-ros", path=str(Path(sys.executable).parent)) or "deal-ros"


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """The installed command, as a user runs it."""
    return subprocess.run([DEAL_ROS, *args], capture_output=True, text=True, timeout=timeout, check=False)


def assert_user_error(rc: int, err: str, *needles: str) -> None:
    """Exit 2 with one line on stderr naming the problem, never a traceback."""
    lines = [line for line in err.splitlines() if line.startswith("deal-ros ")]
    assert rc == 2, err
    assert "Traceback" not in err, err
    assert len(lines) == 1 and ": error: " in lines[0], err
    for needle in needles:
        assert needle in lines[0], lines[0]


@dataclass
class Scenes:
    """Frames with ground truth written into a bag, and the ground-truth PNG folder."""

    bag: WrittenBag
    gt_dir: Path


@pytest.fixture(scope="session")
def scene_bag(tmp_path_factory) -> Scenes:
    """mcap bag of synthetic scenes with known masks: tags topic, camera_info, depth jittered 2-5 ms."""
    root = tmp_path_factory.mktemp("scenes")
    scenes = make_tabletop_scenes(NUM_FRAMES, *SIZE, CLASSES, seed=1)
    bag = write_rgbd_bag(root / "bag", storage="mcap", num_frames=NUM_FRAMES, size=SIZE,
                         frames=[(s.rgb, s.depth_m) for s in scenes], tags_sequence=((0.0, "mug,box"),),
                         jitter_ms=5.0, seed=1)
    gt_dir = root / "gt"
    gt_dir.mkdir()
    for index, scene in enumerate(scenes):
        cv2.imwrite(str(gt_dir / f"{index:06d}.png"), scene.gt_mask)
    return Scenes(bag, gt_dir)


@pytest.fixture(scope="session")
def other_aspect_gt(scene_bag, tmp_path_factory) -> Path:
    """The scene bag's ground truth squeezed to 48x48 (the frames are 64x48): masks of another aspect."""
    gt_dir = tmp_path_factory.mktemp("squeezed") / "gt"
    gt_dir.mkdir()
    for path in sorted(scene_bag.gt_dir.iterdir()):
        mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        cv2.imwrite(str(gt_dir / path.name), cv2.resize(mask, (48, 48), interpolation=cv2.INTER_NEAREST))
    return gt_dir


@pytest.fixture(scope="session")
def realsense_bag(tmp_path_factory) -> WrittenBag:
    """sqlite3 bag with the RealSense topic names, 16UC1 depth and no tags topic."""
    return write_rgbd_bag(tmp_path_factory.mktemp("rs") / "bag", storage="sqlite3", num_frames=NUM_FRAMES,
                          size=SIZE, tags_topic=None, jitter_ms=4.0)


@dataclass
class Trained:
    bag: WrittenBag
    out: Path
    result: subprocess.CompletedProcess

    @property
    def checkpoint(self) -> Path:
        return self.out / "model.safetensors"


@pytest.fixture(scope="session")
def trained(realsense_bag, tmp_path_factory) -> Trained:
    """`deal-ros train BAG --tags "[mug, box]"` (the README's parameter syntax) on the RealSense bag: nothing else
    given but the tiny config."""
    out = tmp_path_factory.mktemp("train") / "model"
    result = run_cli("train", str(realsense_bag.path), "--tags", "[mug, box]", "--steps", "2", "--out", str(out),
                     "--checkpoint-every", "1", *TINY)
    assert result.returncode == 0, result.stderr
    return Trained(realsense_bag, out, result)


@dataclass
class Labelled:
    out: Path
    result: subprocess.CompletedProcess
    tagged_frames: int


@pytest.fixture(scope="session")
def labelled(trained, scene_bag, tmp_path_factory) -> Labelled:
    """`deal-ros label` of the scene bag, with tags for the first 0.25 s only (a tag schedule)."""
    root = tmp_path_factory.mktemp("label")
    schedule = root / "ranges.yaml"
    schedule.write_text("- {start_s: 0.0, end_s: 0.25, tags: 'mug, box'}\n")
    start = scene_bag.bag.start_ns
    tagged = sum(t - start < 0.25e9 for t in scene_bag.bag.rgb_log_ns)
    out = root / "labels"
    result = run_cli("label", str(trained.checkpoint), str(scene_bag.bag.path), "--out", str(out),
                     "--tags-yaml", str(schedule), "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "classes.json").read_text())["classes"] == ["background", *CLASSES]
    return Labelled(out, result, tagged)
