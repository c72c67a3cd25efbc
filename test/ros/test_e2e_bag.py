"""End to end over real ROS 2: a bag written here, `ros2 bag play --clock` into `ros2 launch ... onboard.launch.py`.

The bag is RealSense-like (rgb8 + aligned 16UC1 at 10 Hz, camera_info, a tags topic); its tags start
half-way, so the first half measures the segmenter alone and the second half while it trains, in the
same run. Checked: mask stamps / encodings / size, masks withheld until mask.min_model_step and every
mask's model step (deal/mask_info), the rate while training >= half the rate alone, loss_cls below
ln 2, latency on the sim clock, status still coming after the bag (and its clock) stopped, tags
mirrored into the parameter, and a clean SIGINT stop within 3 s with a loadable final checkpoint.
Tiny model settings keep it under a minute on a CPU. Skipped with the reason where ROS 2 is missing.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy not found: source a ROS 2 (Humble/Jazzy) setup.bash to run")
pytest.importorskip("message_filters", reason="ROS 2 message_filters not installed")

from launch_env import launch_env, launch_unavailable  # noqa: E402
from rcl_interfaces.srv import GetParameters  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from deal_ros.lab.synthetic import make_tabletop_scenes  # noqa: E402
from deal_ros.online.parameters import render_parameter_file  # noqa: E402
from deal_ros.storage.checkpoint import load_checkpoint  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "io"))
from bagfactory import write_rgbd_bag  # noqa: E402

pytestmark = pytest.mark.ros

H, W = 120, 160
CLASSES = ["mug", "box", "ball"]
ALONE_S, TRAINING_S = 8.0, 14.0
MIN_MODEL_STEP = 3


class Listener(Node):
    """Records every deal output with its receipt time (wall clock of this test)."""

    def __init__(self) -> None:
        super().__init__("deal_e2e_listener")
        self.masks: list[tuple[float, Image]] = []
        self.mask_info: list[tuple[float, dict]] = []
        self.status: list[tuple[float, dict]] = []
        self.seg_status: list[tuple[float, dict]] = []
        self.create_subscription(Image, "/deal/mask", lambda m: self.masks.append((time.monotonic(), m)), 50)
        for topic, store in (("/deal/mask_info", self.mask_info), ("/deal/status", self.status),
                             ("/deal/segmenter_status", self.seg_status)):
            self.create_subscription(String, topic, lambda m, s=store: s.append((time.monotonic(), json.loads(m.data))),
                                     50)

    def get_parameter_of(self, executor, node: str, name: str):
        client = self.create_client(GetParameters, f"/{node}/get_parameters")
        assert client.wait_for_service(timeout_sec=10.0)
        future = client.call_async(GetParameters.Request(names=[name]))
        executor.spin_until_future_complete(future, timeout_sec=10.0)
        value = future.result().values[0]
        return list(value.string_array_value) or value.string_value


def spin_for(executor, seconds: float, until=None) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        executor.spin_once(timeout_sec=0.05)
        if until is not None and until():
            return True
    return until is None


def rate(times: list[float]) -> float:
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 2 else 0.0


def test_bag_into_onboard_launch(tmp_path):
    reason = launch_unavailable()
    if reason:
        pytest.skip(reason)
    started = time.monotonic()
    frames = make_tabletop_scenes(8, H, W, classes=CLASSES, seed=3)
    count = int((ALONE_S + TRAINING_S) * 10)
    bag = write_rgbd_bag(tmp_path / "bag", frames=[(f.rgb, f.depth_m) for f in (frames * count)[:count]],
                         tags_topic="/tags", tags_sequence=((ALONE_S, "mug,box"),))
    params = {"classes": CLASSES, "model.input_height": 64, "model.input_width": 80, "model.seg_head_channels": 16,
              "train.batch_size": 2, "train.device": "cpu", "loss.seg_warmup_steps": 0, "loss.deal.warmup_steps": 0,
              "pseudo_label.refine": "none", "checkpoint.period_steps": 0, "keyframe.min_interval_s": 0.2,
              "mask.min_model_step": MIN_MODEL_STEP, "status_period_s": 0.25, "sync.stale_timeout_s": 30.0}
    config = tmp_path / "tiny.yaml"
    config.write_text(render_parameter_file(params))
    model_dir = tmp_path / "model"
    log_path = tmp_path / "launch.log"
    env = launch_env(tmp_path)
    cmd = ["ros2", "launch", "deal_ros", "onboard.launch.py", f"config:={config}", f"model_dir:={model_dir}",
           "tags_topic:=/tags", "use_sim_time:=true"]
    with open(log_path, "w") as log:
        launch = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                  preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    rclpy.init()
    listener = Listener()
    executor = SingleThreadedExecutor()
    executor.add_node(listener)
    play = None
    try:
        assert spin_for(executor, 40.0, lambda: listener.seg_status and listener.status), \
            "the nodes did not come up:\n" + log_path.read_text()[-3000:]
        play = subprocess.Popen(["ros2", "bag", "play", str(bag.path), "--clock"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
        spin_for(executor, ALONE_S + TRAINING_S + 10.0, lambda: play.poll() is not None)
        assert play.poll() == 0, "ros2 bag play failed"
        bag_ended = time.monotonic()
        spin_for(executor, 1.5)
        tags_param = listener.get_parameter_of(executor, "deal_trainer", "tags")
        seg_tags_param = listener.get_parameter_of(executor, "deal_segmenter", "tags")
    finally:
        if play is not None and play.poll() is None:
            os.killpg(play.pid, signal.SIGINT)
        sigint = time.monotonic()
        os.killpg(launch.pid, signal.SIGINT)  # a terminal's Ctrl-C: the launch and its nodes alike
        try:
            launch.wait(timeout=15.0)
        except subprocess.TimeoutExpired:
            os.killpg(launch.pid, signal.SIGKILL)
        stop_s = time.monotonic() - sigint
        executor.shutdown()
        listener.destroy_node()
        rclpy.try_shutdown()
    log_text = log_path.read_text()
    where = f"\n--- launch log (tail) ---\n{log_text[-4000:]}"

    # masks: the input's stamp, mono8 at camera size, only once the model trained MIN_MODEL_STEP steps
    sent = set(bag.rgb_stamps_ns)
    assert listener.masks, "no mask" + where
    info_by_stamp = {(i["stamp"]["sec"], i["stamp"]["nanosec"]): i for _, i in listener.mask_info}
    for _, mask in listener.masks:
        assert (mask.width, mask.height, mask.encoding, mask.step) == (W, H, "mono8", W)
        stamp = (mask.header.stamp.sec, mask.header.stamp.nanosec)
        assert stamp[0] * 10**9 + stamp[1] in sent and mask.header.frame_id == "camera_color_optical_frame"
        info = info_by_stamp[stamp]
        assert not info["warming_up"] and info["model_step"] >= MIN_MODEL_STEP and "mask" in info["published"]
    assert all(isinstance(i["trusted"], bool) for _, i in listener.mask_info)  # default mark: every mask says it
    warming = [i for _, i in listener.mask_info if i["warming_up"]]
    assert warming and all("mask" not in i["published"] and i["model_step"] < MIN_MODEL_STEP for i in warming)

    # the segmenter's rate while training >= half its rate alone (frames processed: deal/mask_info)
    alone = [t for t, i in listener.mask_info if i["model_step"] <= 0]
    training = [t for t, i in listener.mask_info if i["model_step"] >= 1]
    assert rate(training) >= 0.5 * rate(alone) > 0, (rate(alone), rate(training))
    assert rate(training) >= 3.0, f"{rate(training):.1f} masks/s from a 10 Hz camera" + where

    # it learned: loss_cls below ln 2; tags came from the bag's topic and show in both nodes' parameter
    last = listener.status[-1][1]
    assert isinstance(last["masks_trusted"], bool) and last["trust"]["min_agreement"] > 0
    assert last["step"] >= MIN_MODEL_STEP and last["last_step"]["loss_cls"] < math.log(2), last["last_step"]
    assert last["tags"] == ["mug", "box"] and tags_param == ["mug", "box"] and seg_tags_param == ["mug", "box"]
    # the gate saw every pair (one per 0.2 s of the 10 Hz stream), and every keyframe it took reached the buffer
    assert last["keyframes"]["accepted"] >= 0.6 * TRAINING_S / 0.2
    assert last["buffer"]["frames"] == last["keyframes"]["accepted"] - last["depth_degenerate"]

    # latency on the sim clock, its parts apart; health kept coming after the bag (and /clock) stopped
    seg = listener.seg_status[-1][1]
    assert seg["state"] == "ready" and seg["clock_note"] == ""
    assert 0.0 <= seg["latency_s"]["median"] < 2.0 and seg["inference_s"]["median"] > 0 and seg["wait_s"]
    assert [t for t, _ in listener.seg_status if t > bag_ended + 0.5], "segmenter_status stopped with the bag"
    assert [t for t, _ in listener.status if t > bag_ended + 0.5], "status stopped with the bag"

    print(f"\ne2e: masks/s alone {rate(alone):.1f}, while training {rate(training):.1f}; latency median "
          f"{seg['latency_s']['median']:.3f} s (inference {seg['inference_s']['median']:.3f} s); step {last['step']}, "
          f"loss_cls {last['last_step']['loss_cls']:.3f}; keyframes {last['keyframes']['accepted']} of "
          f"{last['pairs']} pairs; stop {stop_s:.2f} s")
    # clean stop: within 3 s of SIGINT, no error, a final checkpoint at the last step
    assert launch.returncode == 0 and stop_s < 3.0, f"stop took {stop_s:.2f} s, rc {launch.returncode}" + where
    for bad in ("Traceback", "context is invalid", "inference failed", "[ERROR]"):
        assert bad not in log_text, bad + where
    assert "checkpoint (shutdown)" in log_text
    assert load_checkpoint(model_dir / "model.safetensors").step >= last["step"]
    assert time.monotonic() - started < 60.0
