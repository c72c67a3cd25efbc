"""Trainer node: synchronised RGB-D + tags in, a CAM network trained online with DEAL, checkpoints out.

Thin on purpose: callbacks only hand messages over (latest pair wins); one worker thread decodes,
gates keyframes, buffers and trains at a capped rate. Every decision is in rclpy-free modules.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger

from deal_ros.config import ConfigError
from deal_ros.io.image_codec import ImageDecodeError, decode_depth_m, decode_rgb
from deal_ros.ros import _rclpy_util as ru
from deal_ros.ros.frames import PairValidator
from deal_ros.ros.keyframes import KeyframeGate
from deal_ros.ros.params import TRAINER, all_param_specs, check_parameter_update, config_from_parameters
from deal_ros.ros.slot import LatestSlot
from deal_ros.ros.startup import check_environment
from deal_ros.ros.status import RateLimiter, RateMeter, trainer_diagnostics, trainer_status
from deal_ros.ros.tagging import TagState


class TrainerNode(Node):
    """`deal_trainer`: see README 'ROS 2 nodes' for topics, services and parameters."""

    def __init__(self, node_name: str = "deal_trainer", tag_state: TagState | None = None, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        from deal_ros.device import describe_device
        from deal_ros.trainer import OnlineTrainer

        log = self.get_logger()
        self.values = ru.declare_specs(self, all_param_specs(TRAINER))
        cfg = config_from_parameters(self.values)
        self.trainer = OnlineTrainer(cfg)
        log.info(f"device: {describe_device(self.trainer.device)} (train.device '{cfg.train.device}'), "
                 f"{cfg.model.backbone} {cfg.model.input_width}x{cfg.model.input_height}, classes {cfg.classes}")
        if self.trainer.device.type == "cpu":
            log.warning("training on the CPU: expect seconds per step (set train.device: cuda on a GPU machine)")
        self.last_checkpoint = ""
        self.checkpoint_error = ""
        if self.values["resume"] and self.trainer.checkpoint_path.is_file():
            try:
                self.trainer.resume()
                self.last_checkpoint = f"resumed {self.trainer.checkpoint_path} at step {self.trainer.step}"
                log.info(self.last_checkpoint)
            except Exception as exc:  # a foreign / damaged file must not stop the robot: start fresh, loudly
                log.error(f"cannot resume from {self.trainer.checkpoint_path}: {exc}; starting from scratch")
        self.tag_state = tag_state or TagState(cfg.classes)
        update = self.tag_state.set(self.values["tags"], "parameter 'tags'", explicit=self.values["tags"] != "")
        if update.error:
            log.error(update.error)
        self.gate = KeyframeGate(self.values["keyframe.min_interval_s"], self.values["keyframe.max_interval_s"],
                                 self.values["keyframe.motion_threshold"])
        self.validator = PairValidator()
        self.slot: LatestSlot[tuple[Any, Any]] = LatestSlot()
        self.paused = False
        self.skipped_frames = 0
        self.step_rate = RateMeter()
        self.limiter = RateLimiter(cfg.train.max_steps_per_second)
        self.last_stats: dict[str, Any] | None = None
        self._pending: dict[str, Any] = {}
        self._pending_lock = threading.Lock()
        self._last_saved_step = self.trainer.step

        reliability, depth = self.values["qos.reliability"], self.values["qos.depth"]
        _, self.topics, self.watchdog, self._subs = ru.subscribe_rgbd(self, self.values, self._seen,
                                                                      self._on_pair)
        self.create_subscription(String, self.values["tags_topic"], self._on_tags, ru.COMMAND_QOS)

        self.status_pub = self.create_publisher(String, "deal/status", 10)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_service(Trigger, "~/save", self._srv_save)
        self.create_service(Trigger, "~/reset", self._srv_reset)
        self.create_service(SetBool, "~/pause", self._srv_pause)
        self.add_on_set_parameters_callback(self._on_parameters)
        self.watchdog.start(time.monotonic())
        self.create_timer(self.values["status_period_s"], self._on_status_timer)
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._work, name="deal_trainer_worker", daemon=True)
        self._worker.start()
        log.info(f"listening: rgb '{self.topics['rgb']}', depth '{self.topics['depth']}' ({reliability}, depth "
                 f"{depth}), tags '{self.values['tags_topic']}'; tags now {list(self.tag_state.tags)}"
                 + ("" if self.tag_state.known else " (unknown: not training until tags are given)"))

    # -- callbacks: trivial, never block ---------------------------------------------------------------
    def _seen(self, msg: Any, name: str) -> None:
        self.watchdog.note_input(name, time.monotonic(), ru.stamp_s(msg.header.stamp))

    def _on_pair(self, rgb: Any, depth: Any) -> None:
        self.watchdog.note_pair(time.monotonic())
        self.slot.put((rgb, depth))

    def _on_tags(self, msg: String) -> None:
        update = self.tag_state.set(msg.data, f"topic '{self.values['tags_topic']}'")
        if update.error:
            self.get_logger().error(update.error)
        elif update.changed:
            self.get_logger().info(f"tags now {list(update.tags)}")

    def _on_parameters(self, params: list[Any]) -> Any:
        changes = {p.name: p.value for p in params}
        update = check_parameter_update(TRAINER, self.trainer.cfg, changes)
        if update.ok and "tags" in update.node_values:
            result = self.tag_state.set(update.node_values["tags"], "parameter 'tags'")
            if result.error:
                self.get_logger().error(result.error)
                return ru.set_parameters_result(result.error)
            self.get_logger().info(f"tags now {list(result.tags)}")
        if not update.ok:
            self.get_logger().error(f"parameter change refused: {update.error}")
            return ru.set_parameters_result(update.error)
        values = update.node_values
        self.gate.min_interval_s = values.get("keyframe.min_interval_s", self.gate.min_interval_s)
        self.gate.max_interval_s = values.get("keyframe.max_interval_s", self.gate.max_interval_s)
        self.gate.motion_threshold = values.get("keyframe.motion_threshold", self.gate.motion_threshold)
        self.watchdog.timeout_s = values.get("sync.stale_timeout_s", self.watchdog.timeout_s)
        if update.config_overrides:
            with self._pending_lock:  # applied by the worker between steps, never mid-step
                self._pending.update(update.config_overrides)
        return ru.set_parameters_result("")

    def _srv_save(self, request: Any, response: Any) -> Any:
        response.success, response.message = self._save("service")
        return response

    def _srv_reset(self, request: Any, response: Any) -> Any:
        self.trainer.reset()
        self.gate.reset()
        self._last_saved_step = 0
        response.success, response.message = True, "model, optimizer, step and buffer reset"
        self.get_logger().warning(response.message)
        return response

    def _srv_pause(self, request: Any, response: Any) -> Any:
        self.paused = bool(request.data)
        response.success, response.message = True, ("paused" if self.paused else "training") + \
            f" at step {self.trainer.step}"
        self.get_logger().info(response.message)
        return response

    def _save(self, why: str) -> tuple[bool, str]:
        try:
            path = self.trainer.save()
        except Exception as exc:  # disk full, permissions: the previous file is intact (atomic replace)
            self.checkpoint_error = f"checkpoint write failed ({why}) at step {self.trainer.step}: {exc}"
            self.get_logger().error(self.checkpoint_error + "; the previous checkpoint is untouched")
            return False, self.checkpoint_error
        self._last_saved_step = self.trainer.step
        self.checkpoint_error = ""
        self.last_checkpoint = f"{path} at step {self.trainer.step}"
        self.get_logger().info(f"checkpoint ({why}): {self.last_checkpoint}")
        return True, self.last_checkpoint

    # -- the worker thread ------------------------------------------------------------------------------
    def _work(self) -> None:
        log = self.get_logger()
        while not self._stop.is_set():
            self._apply_pending()
            trainable = (not self.paused and self.tag_state.known and len(self.trainer.buffer) > 0)
            timeout = min(self.limiter.wait_s(time.monotonic()), 0.2) if trainable else 0.2
            taken = self.slot.take(timeout=timeout)
            if taken is not None:
                self._intake(*taken.item)
            if not trainable or self.limiter.wait_s(time.monotonic()) > 0:
                continue
            self.limiter.mark(time.monotonic())
            try:
                stats = self.trainer.train_step()
            except Exception as exc:  # e.g. OOM at batch size 1: stop training, keep the node up
                log.error(f"training step failed: {exc!r}; pausing (call ~/pause false to retry)")
                self.paused = True
                continue
            if stats is None:
                continue
            self.step_rate.tick()
            self.last_stats = stats.as_dict()
            period = self.trainer.cfg.checkpoint.period_steps
            if period > 0 and stats.step % period == 0:
                self._save("period")

    def _apply_pending(self) -> None:
        with self._pending_lock:
            overrides, self._pending = self._pending, {}
        if not overrides:
            return
        try:
            self.trainer.update_config(overrides)
            self.limiter.max_per_s = self.trainer.cfg.train.max_steps_per_second
            self.get_logger().info(f"config updated: {overrides}")
        except (ConfigError, ValueError) as exc:
            self.get_logger().error(f"config update {overrides} refused: {exc}")

    def _intake(self, rgb_msg: Any, depth_msg: Any) -> None:
        log = self.get_logger()
        check = self.validator.check(rgb_msg, depth_msg)
        if check is not None:
            for warning in check.warnings:
                log.warning(warning, once=True)
            if not check.ok:
                self.skipped_frames += 1
                log.error("skipping RGB-D pair: " + "; ".join(check.errors), throttle_duration_sec=5.0)
                return
            log.info(check.info, once=True)
        if not self.tag_state.known:
            return
        tags = self.tag_state.tags
        try:
            rgb = decode_rgb(rgb_msg, self.topics["rgb"])
            stamp = ru.stamp_s(rgb_msg.header.stamp)
            if not self.gate.decide(stamp, rgb, tags).accept:
                return
            depth_m = decode_depth_m(depth_msg, self.topics["depth"])
            self.trainer.add_frame(rgb, depth_m, list(tags))
        except (ImageDecodeError, ValueError) as exc:
            self.skipped_frames += 1
            log.error(f"skipping RGB-D pair: {exc}", throttle_duration_sec=5.0)

    # -- status -----------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        import torch

        from deal_ros.device import describe_device

        trainer = self.trainer
        device = trainer.device
        gpu_mb = torch.cuda.memory_allocated(device) / 2**20 if device.type == "cuda" else None
        return trainer_status(
            step=trainer.step, paused=self.paused, tags=self.tag_state.tags, tags_known=self.tag_state.known,
            classes=trainer.cfg.classes, buffer_frames=len(trainer.buffer),
            buffer_capacity=trainer.cfg.buffer.max_frames, buffer_bytes=trainer.buffer.nbytes,
            class_counts=trainer.buffer.class_counts().tolist(), steps_per_s=self.step_rate.rate(),
            last=self.last_stats, device=describe_device(device), device_type=device.type, gpu_memory_mb=gpu_mb,
            batch_size=trainer.batch_size, keyframes_accepted=self.gate.accepted,
            keyframes_rejected=self.gate.rejected, pairs=self.watchdog.pairs, frames_dropped=self.slot.dropped,
            skipped_frames=self.skipped_frames, sync_warning=self._sync_warning,
            last_checkpoint=self.last_checkpoint, checkpoint_error=self.checkpoint_error,
            requested_device=trainer.cfg.train.device)

    _sync_warning: str | None = None

    def _on_status_timer(self) -> None:
        self._sync_warning = ru.publish_health(self, trainer_diagnostics)

    def shutdown(self) -> None:
        """Stop the worker and write a last checkpoint when steps were taken since the last one."""
        self._stop.set()
        self.slot.close()
        self._worker.join(timeout=30.0)
        if self.trainer.step > self._last_saved_step:
            self._save("shutdown")


def run_nodes(build: Any, argv: list[str] | None = None) -> int:
    """Shared main: environment check before torch is used, rclpy init, spin, clean shutdown."""
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor

    rclpy.init(args=argv)
    logger = rclpy.logging.get_logger("deal_ros")
    nodes: list[Node] = []
    try:
        requested = _requested_device(argv)
        report = check_environment(requested)
        for line in report.info:
            logger.info(line)
        for line in report.warnings:
            logger.warning(line)
        if not report.ok:
            for line in report.errors:
                logger.fatal(line)
            return 1
        try:
            nodes = build()
        except (ConfigError, RuntimeError, ValueError) as exc:
            logger.fatal(f"cannot start: {exc}")
            return 1
        executor = MultiThreadedExecutor(num_threads=4)
        for node in nodes:
            executor.add_node(node)
        with contextlib.suppress(KeyboardInterrupt, ExternalShutdownException):
            executor.spin()
    finally:
        for node in reversed(nodes):
            if hasattr(node, "shutdown"):
                node.shutdown()
            node.destroy_node()
        if rclpy.ok():
            rclpy.try_shutdown()
    return 0


def _requested_device(argv: list[str] | None) -> str:
    """train.device from the command line (-p train.device:=cuda) for the early check; else 'auto'."""
    args = sys.argv if argv is None else argv
    for arg in args:
        if arg.startswith("train.device:="):
            return arg.split(":=", 1)[1]
    return "auto"


def main(argv: list[str] | None = None) -> None:
    sys.exit(run_nodes(lambda: [TrainerNode()], argv))


if __name__ == "__main__":
    main()

