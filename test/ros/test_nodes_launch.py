"""The real nodes over real ROS 2 (rclpy + DDS): synthetic RGB-D in, masks / status / checkpoints out.

Skipped with a reason where rclpy is not installed (CI). Two ways in:
- in-process: the onboard pair (shared model) and a standalone segmenter, driven by a test node;
- the launch file: `ros2 launch deal_ros onboard.launch.py` as a subprocess (needs the package
  built with colcon and sourced; skipped otherwise).
Tiny model settings (64x80 input, batch 2) keep a run to seconds on a CPU.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy not found: source a ROS 2 (Humble/Jazzy) setup.bash to run")
pytest.importorskip("message_filters", reason="ROS 2 message_filters not installed")

from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, PointCloud2  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from deal_ros.config import DealRosConfig  # noqa: E402
from deal_ros.io.image_codec import image_fields  # noqa: E402
from deal_ros.lab.synthetic import make_tabletop_scenes  # noqa: E402
from deal_ros.online.parameters import render_parameter_file  # noqa: E402
from deal_ros.storage.checkpoint import load_checkpoint, read_manifest  # noqa: E402

pytestmark = pytest.mark.ros

H, W = 120, 160
CLASSES = ["mug", "box", "ball"]


def tiny_params(tmp_path: Path) -> dict:
    return {
        "classes": CLASSES,
        "model.input_height": 64, "model.input_width": 80, "model.seg_head_channels": 16,
        "train.batch_size": 2, "train.device": "cpu", "train.max_steps_per_second": 0.0,
        "loss.seg_warmup_steps": 0, "loss.deal.warmup_steps": 0, "pseudo_label.refine": "none",
        "checkpoint.directory": str(tmp_path / "model"), "checkpoint.period_steps": 0,
        "keyframe.min_interval_s": 0.0, "keyframe.motion_threshold": 0.0,
        "status_period_s": 0.2, "reload_period_s": 0.5, "sync.stale_timeout_s": 30.0,
        "mask.min_model_step": 0,
    }


class Driver(Node):
    """Publishes synthetic RGB-D + camera_info + tags; records what the deal nodes publish."""

    def __init__(self, prefix: str, ns: str = "") -> None:
        super().__init__("deal_test_driver")
        self.frames = make_tabletop_scenes(4, H, W, classes=CLASSES, seed=1)
        self.rgb_pub = self.create_publisher(Image, f"{prefix}/rgb", 10)
        self.depth_pub = self.create_publisher(Image, f"{prefix}/depth", 10)
        self.info_pub = self.create_publisher(CameraInfo, f"{prefix}/info", 10)
        self.tags_pub = self.create_publisher(String, f"{prefix}/tags", 10)
        self.masks: list[Image] = []
        self.pseudo: list[Image] = []
        self.points: list[PointCloud2] = []
        self.status: list[dict] = []
        self.mask_info: list[dict] = []
        self.class_names: list[str] = []
        self.sent: dict[tuple[int, int], str] = {}
        self.create_subscription(Image, f"{ns}/deal/mask", self.masks.append, 10)
        self.create_subscription(Image, f"{ns}/deal/pseudo_label", self.pseudo.append, 10)
        self.create_subscription(PointCloud2, f"{ns}/deal/points", self.points.append, 10)
        self.create_subscription(String, f"{ns}/deal/status", lambda m: self.status.append(json.loads(m.data)), 10)
        self.create_subscription(String, f"{ns}/deal/mask_info", lambda m: self.mask_info.append(json.loads(m.data)),
                                 10)
        self.seg_status: list[dict] = []
        self.create_subscription(String, f"{ns}/deal/segmenter_status",
                                 lambda m: self.seg_status.append(json.loads(m.data)), 10)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.create_subscription(String, f"{ns}/deal/class_names", lambda m: self.class_names.append(m.data), latched)
        self.count = 0

    def publish_frame(self) -> None:
        frame = self.frames[self.count % len(self.frames)]
        stamp = self.get_clock().now().to_msg()
        frame_id = "cam_color_optical"
        for pub, array, enc in ((self.rgb_pub, frame.rgb, "rgb8"),
                                (self.depth_pub, np.round(frame.depth_m * 1000).astype(np.uint16), "16UC1")):
            fields = image_fields(array, enc)
            msg = Image(height=fields["height"], width=fields["width"], encoding=enc, is_bigendian=0,
                        step=fields["step"])
            msg.data = bytes(fields["data"])
            msg.header.stamp, msg.header.frame_id = stamp, frame_id
            pub.publish(msg)
        info = CameraInfo(width=W, height=H)
        info.header.stamp, info.header.frame_id = stamp, frame_id
        info.k = [float(v) for v in frame.intrinsics.reshape(-1)]
        self.info_pub.publish(info)
        self.sent[(stamp.sec, stamp.nanosec)] = frame_id
        self.count += 1


def spin_until(executor, condition, timeout_s: float, driver: Driver | None = None, period_s: float = 0.1) -> bool:
    """Publish a frame every period_s (when a driver is given) until condition() or timeout."""
    end = time.monotonic() + timeout_s
    next_pub = 0.0
    while time.monotonic() < end:
        if driver is not None and time.monotonic() >= next_pub:
            driver.publish_frame()
            next_pub = time.monotonic() + period_s
        executor.spin_once(timeout_sec=0.02)
        if condition():
            return True
    return False


def call(executor, node: Node, srv_type, name: str, request, timeout_s: float = 20.0):
    client = node.create_client(srv_type, name)
    assert client.wait_for_service(timeout_sec=10.0), f"service {name} not available"
    future = client.call_async(request)
    end = time.monotonic() + timeout_s
    while not future.done() and time.monotonic() < end:
        executor.spin_once(timeout_sec=0.05)
    assert future.done(), f"service {name} did not answer"
    return future.result()


@pytest.fixture()
def ros():
    rclpy.init()
    yield
    rclpy.try_shutdown()


def _overrides(params: dict) -> list[Parameter]:
    return [Parameter(k, value=v) for k, v in params.items()]


def _remaps(prefix: str) -> list[str]:
    """The nodes' relative inputs remapped to the driver's topics, as the launch file's *_topic arguments do."""
    from deal_ros.ros.rgbd_node import CAMERA_INFO, INPUTS, TAGS

    rules = {INPUTS["rgb"]: "rgb", INPUTS["depth"]: "depth", CAMERA_INFO: "info", TAGS: "tags"}
    return ["--ros-args", *(arg for name, topic in rules.items() for arg in ("-r", f"{name}:={prefix}/{topic}"))]


def test_onboard_in_process(ros, tmp_path):
    from deal_ros.ros.onboard import build_onboard
    from deal_ros.ros.segmenter_node import SegmenterNode

    params = tiny_params(tmp_path)
    nodes = build_onboard(parameter_overrides=_overrides(params), cli_args=_remaps("/t1"))
    trainer = nodes[0]
    driver = Driver("/t1")
    executor = MultiThreadedExecutor(num_threads=4)
    for node in (*nodes, driver):
        executor.add_node(node)
    try:
        # no tags yet: masks flow, no training
        assert spin_until(executor, lambda: len(driver.masks) >= 2, 60, driver), "no mask arrived"
        mask = driver.masks[-1]
        assert (mask.width, mask.height, mask.encoding, mask.step) == (W, H, "mono8", W)
        assert (mask.header.stamp.sec, mask.header.stamp.nanosec) in driver.sent
        assert mask.header.frame_id == "cam_color_optical"
        assert driver.class_names and json.loads(driver.class_names[-1])["classes"]["1"] == "mug"
        assert trainer.trainer.step == 0
        # unknown tag refused, then real tags: training steps advance (status topic)
        driver.tags_pub.publish(String(data="plate"))
        driver.tags_pub.publish(String(data="mug, box"))
        assert spin_until(executor, lambda: driver.status and driver.status[-1]["step"] >= 3, 120, driver), \
            f"training did not advance: {driver.status[-1] if driver.status else 'no status'}"
        status = driver.status[-1]
        assert status["tags"] == ["mug", "box"] and status["buffer"]["frames"] >= 1
        # tags from the topic show in both nodes' parameter (ros2 param get tells the truth)
        assert trainer.get_parameter("tags").value == ["mug", "box"] == nodes[1].get_parameter("tags").value
        assert {"loss", "loss_cls", "loss_deal", "pseudo_coverage", "step_time_s"} <= set(status["last_step"])
        # the planner's field: default trust rule (20 steps averaged), a few steps in: not trusted, masks marked
        assert status["masks_trusted"] is False and status["trust"]["window_steps"] == 20
        assert driver.mask_info and all(i["trusted"] is False and "mask" in i["published"] for i in driver.mask_info)
        assert spin_until(executor, lambda: len(driver.pseudo) >= 1 and len(driver.points) >= 1, 60, driver)
        assert driver.pseudo[-1].encoding == "mono8" and driver.points[-1].point_step == 16
        # run-time parameter change and a refused one
        result = trainer.set_parameters([Parameter("tags", value=["ball"])])
        assert result[0].successful and trainer.tag_state.tags == ("ball",)
        assert nodes[1].get_parameter("tags").value == ["ball"]
        assert not trainer.set_parameters([Parameter("tags", value=["plate"])])[0].successful
        assert not trainer.set_parameters([Parameter("model.input_height", value=128)])[0].successful
        # save -> a loadable checkpoint
        response = call(executor, driver, Trigger, "/deal_trainer/save", Trigger.Request())
        assert response.success, response.message
        path = tmp_path / "model" / "model.safetensors"
        cfg = DealRosConfig(classes=CLASSES).updated({"model.input_height": 64, "model.input_width": 80,
                                                   "model.seg_head_channels": 16})
        ckpt = load_checkpoint(path, expected=cfg)
        assert ckpt.step >= 3
    finally:
        for node in nodes:
            node.shutdown()
            node.destroy_node()
        executor.shutdown()
    # a standalone segmenter (separate-process mode) starts from that checkpoint
    standalone = SegmenterNode(parameter_overrides=_overrides(params), cli_args=_remaps("/t1"))
    try:
        assert standalone.segmenter.step == int(read_manifest(path)["step"])
    finally:
        standalone.shutdown()
        standalone.destroy_node()
        driver.destroy_node()


@pytest.mark.parametrize("separate", ["false", "true"])
def test_launch_file(ros, tmp_path, separate):
    from launch_env import launch_env, launch_unavailable

    reason = launch_unavailable()
    if reason:
        pytest.skip(reason)
    # separate processes also run in a namespace: relative topic arguments and the outputs move with it
    ns = "/robot1" if separate == "true" else ""
    prefix = "t_launch" if ns else "/t_launch"
    params = tiny_params(tmp_path)
    params.pop("checkpoint.directory")
    params["checkpoint.period_steps"] = 2  # a standalone segmenter publishes masks once it loaded trained weights
    config = tmp_path / "tiny.yaml"
    config.write_text(render_parameter_file(params))
    model_dir = tmp_path / "model"
    cmd = ["ros2", "launch", "deal_ros", "onboard.launch.py", f"config:={config}", f"model_dir:={model_dir}",
           f"rgb_topic:={prefix}/rgb", f"depth_topic:={prefix}/depth", f"camera_info_topic:={prefix}/info",
           f"tags_topic:={prefix}/tags", "tags:=mug,box", f"separate_processes:={separate}",
           *([f"namespace:={ns.strip('/')}"] if ns else [])]
    log = open(tmp_path / "launch.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env=launch_env(tmp_path))
    driver = Driver(f"{ns}/{prefix}" if ns else prefix, ns)
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(driver)
    try:
        ok = spin_until(executor, lambda: proc.poll() is not None or (
            len(driver.masks) >= 1 and driver.status and driver.status[-1]["step"] >= 2), 150, driver, period_s=0.2)
        ok = ok and proc.poll() is None
        assert ok, (f"masks {len(driver.masks)}, status {driver.status[-1] if driver.status else None}\n"
                    + (tmp_path / "launch.log").read_text()[-3000:])
        mask = driver.masks[-1]
        assert (mask.width, mask.height, mask.encoding) == (W, H, "mono8")
        assert (mask.header.stamp.sec, mask.header.stamp.nanosec) in driver.sent
        response = call(executor, driver, Trigger, f"{ns}/deal_trainer/save", Trigger.Request())
        assert response.success, response.message
        assert load_checkpoint(model_dir / "model.safetensors").step >= 2
        saved = read_manifest(model_dir / "model.safetensors")["step"]
        # shared model (onboard) or hot reload (separate processes): the segmenter serves trained weights
        assert spin_until(executor, lambda: driver.seg_status and driver.seg_status[-1]["model_step"] >= int(saved),
                          30, driver, period_s=0.2), driver.seg_status[-1:]
    finally:
        with contextlib.suppress(ProcessLookupError):  # already gone (it failed to start)
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
        executor.shutdown()
        driver.destroy_node()


def test_threads_are_not_leaked():
    assert not [t for t in threading.enumerate() if t.name.startswith("deal_") and t.is_alive()]


def test_a_qos_override_changes_only_its_topic(ros, tmp_path):
    from deal_ros.ros.segmenter_node import SegmenterNode

    params = tiny_params(tmp_path) | {"qos_overrides./q/rgb.subscription.reliability": "reliable"}
    node = SegmenterNode(parameter_overrides=_overrides(params), cli_args=_remaps("/q"))
    try:
        rgb_sub, depth_sub = (sub.sub for sub in node._pair_subs[1:])
        assert (rgb_sub.topic_name, depth_sub.topic_name) == ("/q/rgb", "/q/depth")
        assert rgb_sub.qos_profile.reliability == ReliabilityPolicy.RELIABLE
        assert depth_sub.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT  # not carried over
        assert node.camera_info_sub.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT
    finally:
        node.shutdown()
        node.destroy_node()


def test_onboard_withholds_masks_until_trusted(ros, tmp_path):
    """mask.until_trusted: withhold: no mask before the trainer trusts the weights in use, masks after; the trust
    reaches the standalone segmenter through the checkpoint."""
    from deal_ros.ros.onboard import build_onboard
    from deal_ros.ros.segmenter_node import SegmenterNode

    # a rule that trusts after the first step with pseudo-labels (any agreement >= 0, one step averaged)
    params = {**tiny_params(tmp_path), "mask.until_trusted": "withhold", "trust.min_agreement": 0.0,
              "trust.window_steps": 1, "trust.hold_steps": 1}
    nodes = build_onboard(parameter_overrides=_overrides(params), cli_args=_remaps("/t3"))
    driver = Driver("/t3")
    executor = MultiThreadedExecutor(num_threads=4)
    for node in (*nodes, driver):
        executor.add_node(node)
    path = tmp_path / "model" / "model.safetensors"
    try:
        # no tags: no training, no trust: frames are processed (mask_info) but no mask goes out
        assert spin_until(executor, lambda: len(driver.mask_info) >= 3, 60, driver), "no frame processed"
        assert not driver.masks
        assert all(not i["trusted"] and "mask" not in i["published"] for i in driver.mask_info)
        assert driver.status and driver.status[-1]["masks_trusted"] is False
        assert spin_until(executor, lambda: driver.seg_status, 10, driver)
        assert driver.seg_status[-1]["masks_trusted"] is False
        assert driver.seg_status[-1]["masks_withheld_until_trusted"] is True
        driver.tags_pub.publish(String(data="mug, box"))
        assert spin_until(executor, lambda: driver.status and driver.status[-1]["masks_trusted"], 120, driver), \
            f"never trusted: {driver.status[-1] if driver.status else 'no status'}"
        trusted_status = driver.status[-1]
        assert trusted_status["head_agreement"] is not None and trusted_status["trust"]["trusted_since_step"] >= 1
        assert spin_until(executor, lambda: len(driver.masks) >= 1, 60, driver), "no mask after trust"
        stamp = driver.masks[-1].header.stamp
        key = (stamp.sec, stamp.nanosec)

        def info_of_mask() -> dict | None:  # mask_info goes out after the mask it describes
            return next((i for i in driver.mask_info if (i["stamp"]["sec"], i["stamp"]["nanosec"]) == key), None)

        assert spin_until(executor, lambda: info_of_mask() is not None, 30), "no mask_info for the mask"
        info = info_of_mask()
        assert info is not None and info["trusted"] and "mask" in info["published"]
        assert call(executor, driver, Trigger, "/deal_trainer/save", Trigger.Request()).success
    finally:
        for node in nodes:
            node.shutdown()
            node.destroy_node()
        executor.shutdown()
    standalone = SegmenterNode(parameter_overrides=_overrides(params), cli_args=_remaps("/t3"))
    try:
        assert standalone.segmenter.step == int(read_manifest(path)["step"]) and standalone.segmenter.trusted
    finally:
        standalone.shutdown()
        standalone.destroy_node()
        driver.destroy_node()
