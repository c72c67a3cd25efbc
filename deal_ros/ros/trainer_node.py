"""Trainer node: synchronised RGB-D + tags in, a CAM network trained online with DEAL, checkpoints out.

Thin on purpose: the pair callback gates keyframes (every pair, cheaply) and buffers the accepted
ones; a worker thread trains at a capped rate (deal_ros.online.training_loop). Every decision is in
rclpy-free modules.
"""

from __future__ import annotations

import contextlib
import os
import signal
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
from deal_ros.live import WeightHandoff
from deal_ros.online.keyframes import KeyframeGate
from deal_ros.online.pairs import PairValidator
from deal_ros.online.parameters import TRAINER, all_param_specs, check_parameter_update, config_from_parameters
from deal_ros.online.startup import check_environment, device_notes, weights_line
from deal_ros.online.status import trainer_diagnostics, trainer_status
from deal_ros.online.tags import TagState, TagUpdate
from deal_ros.online.training_loop import KeyframeIntake, TrainingLoop
from deal_ros.ros import _rclpy_util as ru


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
        device = self.trainer.device
        log.info(f"device: {describe_device(device)} (train.device '{cfg.train.device}'), "
                 f"{cfg.model.backbone} {cfg.model.input_width}x{cfg.model.input_height}, classes {cfg.classes}")
        info, warnings = device_notes(cfg.train.device, device.type)
        for line in info:
            log.info(line)
        for line in warnings:
            log.warning(line)
        log.info(weights_line(self.trainer.model))
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
        update = self.tag_state.set(self.values["tags"], "parameter 'tags'", explicit=self.values["tags"] != "",
                                    origin=self)
        if update.error:
            log.error(update.error)
        self.tag_state.add_listener(self, self._tags_changed)
        self.gate = KeyframeGate(self.values["keyframe.min_interval_s"], self.values["keyframe.max_interval_s"],
                                 self.values["keyframe.motion_threshold"])
        self.intake = KeyframeIntake(self.trainer, self.gate)
        self.validator = PairValidator()
        self.skipped_frames = 0
        self._last_saved_step = self.trainer.step
        self._save_lock = threading.Lock()
        self.loop = TrainingLoop(self.trainer, log, ready=lambda: self.tag_state.known, save=self._save,
                                 sync_every_steps=self.values["weights_sync_steps"])
        self._set_inference_priority(self.values["inference_priority"])

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
        ru.steady_timer(self, self.values["status_period_s"], self._on_status_timer)
        self.loop.start()
        log.info(f"listening: rgb '{self.topics['rgb']}', depth '{self.topics['depth']}' ({reliability}, depth "
                 f"{depth}), tags '{self.values['tags_topic']}'; tags now {list(self.tag_state.tags)}"
                 + ("" if self.tag_state.known else " (unknown: not training until tags are given)"))

    def share_weights(self) -> WeightHandoff:
        """For an in-process segmenter: a handoff that gets the weights now and after every weights_sync_steps."""
        self.loop.handoff = WeightHandoff()
        self.loop.publish_weights()
        return self.loop.handoff

    # -- callbacks: short, never wait for training ------------------------------------------------------
    def _seen(self, msg: Any, name: str) -> None:
        self.watchdog.note_input(name, time.monotonic(), ru.stamp_s(msg.header.stamp))

    def _on_pair(self, rgb_msg: Any, depth_msg: Any) -> None:
        """Every synchronised pair: keyframe gate (a time check, then a thumbnail); accepted frames are buffered."""
        self.watchdog.note_pair(time.monotonic())
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
        try:
            result = self.intake.offer(ru.stamp_s(rgb_msg.header.stamp),
                                       lambda: decode_rgb(rgb_msg, self.topics["rgb"]),
                                       lambda: decode_depth_m(depth_msg, self.topics["depth"]), self.tag_state.tags)
        except (ImageDecodeError, ValueError) as exc:
            self.skipped_frames += 1
            log.error(f"skipping RGB-D pair: {exc}", throttle_duration_sec=5.0)
            return
        if result.degenerate:
            log.warning(f"keyframe left out, '{self.topics['depth']}' is unusable: {result.degenerate} "
                        f"({self.intake.degenerate} so far; is the depth stream running?)", throttle_duration_sec=30.0)
        if result.accepted:
            self.loop.wake()

    def _on_tags(self, msg: String) -> None:
        update = self.tag_state.set(msg.data, f"topic '{self.values['tags_topic']}'")
        if update.error:
            self.get_logger().error(update.error)
        elif update.changed:
            self.get_logger().info(f"tags now {list(update.tags)}")

    def _tags_changed(self, update: TagUpdate) -> None:
        """Tags changed elsewhere (topic, the other node's parameter): mirror them into our `tags` parameter."""
        ru.set_tags_parameter(self, update.tags)

    def _on_parameters(self, params: list[Any]) -> Any:
        changes = {p.name: p.value for p in params}
        update = check_parameter_update(TRAINER, self.trainer.cfg, changes)
        if update.ok and "tags" in update.node_values:
            result = self.tag_state.set(update.node_values["tags"], "parameter 'tags'", origin=self)
            if result.error:
                self.get_logger().error(result.error)
                return ru.set_parameters_result(result.error)
            if result.changed:
                self.get_logger().info(f"tags now {list(result.tags)}")
        if not update.ok:
            self.get_logger().error(f"parameter change refused: {update.error}")
            return ru.set_parameters_result(update.error)
        values = update.node_values
        self.gate.min_interval_s = values.get("keyframe.min_interval_s", self.gate.min_interval_s)
        self.gate.max_interval_s = values.get("keyframe.max_interval_s", self.gate.max_interval_s)
        self.gate.motion_threshold = values.get("keyframe.motion_threshold", self.gate.motion_threshold)
        self.watchdog.timeout_s = values.get("sync.stale_timeout_s", self.watchdog.timeout_s)
        self.loop.sync_every_steps = values.get("weights_sync_steps", self.loop.sync_every_steps)
        if "inference_priority" in values:
            self._set_inference_priority(values["inference_priority"])
        if update.config_overrides:
            self.loop.request_config(update.config_overrides)
        return ru.set_parameters_result("")

    def _set_inference_priority(self, share: float) -> None:
        self.trainer.control.yield_share = share if self.trainer.device.type == "cpu" else 0.0

    def _srv_save(self, request: Any, response: Any) -> Any:
        response.success, response.message = self._save("service")
        return response

    def _srv_reset(self, request: Any, response: Any) -> Any:
        self.trainer.reset()
        self.gate.reset()
        self._last_saved_step = 0
        self.loop.publish_weights()
        response.success, response.message = True, "model, optimizer, step and buffer reset"
        self.get_logger().warning(response.message)
        return response

    def _srv_pause(self, request: Any, response: Any) -> Any:
        self.loop.set_paused(bool(request.data))
        response.success, response.message = True, ("paused" if self.loop.paused else "training") + \
            f" at step {self.trainer.step}"
        self.get_logger().info(response.message)
        return response

    def _save(self, why: str) -> tuple[bool, str]:
        with self._save_lock:  # the period save (worker) and a service call never write at once
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

    # -- status -----------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        import torch

        from deal_ros.device import describe_device

        trainer = self.trainer
        device = trainer.device
        gpu_mb = torch.cuda.memory_allocated(device) / 2**20 if device.type == "cuda" else None
        return trainer_status(
            step=trainer.step, paused=self.loop.paused, tags=self.tag_state.tags, tags_known=self.tag_state.known,
            classes=trainer.cfg.classes, buffer_frames=len(trainer.buffer),
            buffer_capacity=trainer.cfg.buffer.max_frames, buffer_bytes=trainer.buffer.nbytes,
            class_counts=trainer.buffer.class_counts().tolist(), steps_per_s=self.loop.step_rate.rate(),
            last=self.loop.last_stats, device=describe_device(device), device_type=device.type,
            gpu_memory_mb=gpu_mb, batch_size=trainer.batch_size, keyframes_accepted=self.gate.accepted,
            keyframes_rejected=self.gate.rejected, pairs=self.watchdog.pairs,
            skipped_frames=self.skipped_frames, sync_warning=self._sync_warning,
            last_checkpoint=self.last_checkpoint, checkpoint_error=self.checkpoint_error,
            requested_device=trainer.cfg.train.device, depth_degenerate=self.intake.degenerate,
            steps_interrupted=trainer.interrupted_steps, inference_yield_s=trainer.control.yield_s)

    _sync_warning: str | None = None

    def _on_status_timer(self) -> None:
        self._sync_warning = ru.publish_health(self, trainer_diagnostics)

    def request_stop(self) -> None:
        """Start stopping at once: the training step in flight ends at its next layer."""
        self.loop.request_stop()

    def shutdown(self) -> None:
        """Stop the worker (no longer than ~2 s) and write a last checkpoint if steps were taken since the last."""
        if not self.loop.stop(timeout_s=2.0):
            self.get_logger().warning("the training worker did not stop within 2 s; saving the last completed step")
        if self.trainer.step > self._last_saved_step:
            self._save("shutdown")


def run_nodes(build: Any, argv: list[str] | None = None) -> int:
    """Shared main: environment check before torch is used, rclpy init, spin, clean stop on SIGINT/SIGTERM.

    rclpy's own signal handler would invalidate the context at once, under the feet of the worker threads
    (publishing, "context is invalid"); ours only asks the spin loop to stop. Then every node's workers are
    told to stop together (a training step ends at its next layer), the last checkpoint is written, and
    only then is the context shut down. Repeated signals change nothing (a terminal's Ctrl-C reaches the node
    twice under `ros2 launch`: directly and forwarded); launch's SIGKILL escalation is the hard stop.
    """
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
    ru.route_python_logging()
    logger = rclpy.logging.get_logger("deal_ros")
    nodes: list[Node] = []
    executor = None
    try:
        report = check_environment(_requested_device(argv))
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
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
        logger.info("stopping")
    finally:
        started = time.monotonic()
        for node in nodes:
            if hasattr(node, "request_stop"):
                node.request_stop()
        for node in reversed(nodes):
            if hasattr(node, "shutdown"):
                node.shutdown()
        if executor is not None:
            executor.shutdown(timeout_sec=1.0)
        for node in nodes:
            node.destroy_node()
        stuck = [t.name for t in threading.enumerate() if t.name.startswith("deal_") and t.is_alive()]
        if nodes:
            logger.info(f"stopped in {time.monotonic() - started:.2f} s")
        if stuck:  # exiting while a thread is inside a torch op aborts the process (std::terminate)
            logger.warning(f"{stuck} did not stop in time; leaving without waiting for them")
        rclpy.try_shutdown()
        for sig, handler in previous.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(sig, handler)
        if stuck:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
    return 0


def _requested_device(argv: list[str] | None) -> str | None:
    """train.device given on the command line (-p train.device:=cuda) for the early check; else None."""
    args = sys.argv if argv is None else argv
    for arg in args:
        if arg.startswith("train.device:="):
            return arg.split(":=", 1)[1]
    return None


def main(argv: list[str] | None = None) -> None:
    sys.exit(run_nodes(lambda: [TrainerNode()], argv))


if __name__ == "__main__":
    main()

