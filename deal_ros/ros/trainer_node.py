"""Trainer node: synchronised RGB-D + tags in, a CAM network trained online with DEAL, checkpoints out.

Thin on purpose: the pair callback gates keyframes (every pair, cheaply) and buffers the accepted
ones; a worker thread trains at a capped rate (deal_ros.online.training_loop). Every decision is in
rclpy-free modules.
"""

from __future__ import annotations

import threading
from typing import Any

from sensor_msgs.msg import Image
from std_srvs.srv import SetBool, Trigger

from deal_ros.compute.live import WeightHandoff
from deal_ros.config import DealRosConfig
from deal_ros.errors import DealRosError
from deal_ros.io.image_codec import decode_depth_m, decode_rgb
from deal_ros.online.keyframes import KeyframeGate
from deal_ros.online.parameters import TRAINER, ParameterUpdate, config_from_parameters
from deal_ros.online.startup import device_notes, weights_line
from deal_ros.online.status import trainer_diagnostics, trainer_status
from deal_ros.online.tags import TagState
from deal_ros.online.training_loop import KeyframeIntake, TrainingLoop
from deal_ros.ros import _rclpy_util as ru
from deal_ros.ros.rgbd_node import TAGS, RGBDNode


class TrainerNode(RGBDNode):
    """`deal_trainer`: see README 'ROS 2 nodes' for topics, services and parameters."""

    def __init__(self, node_name: str = "deal_trainer", tag_state: TagState | None = None, **kwargs: Any) -> None:
        super().__init__(node_name, TRAINER, **kwargs)
        from deal_ros.compute.device import describe_device
        from deal_ros.training.trainer import OnlineTrainer

        log = self.get_logger()
        cfg = config_from_parameters(self.values)
        self.trainer = OnlineTrainer(cfg)
        device = self.trainer.device
        log.info(f"device: {describe_device(device)} (train.device '{cfg.train.device}'), "
                 f"{cfg.model.backbone} {self.trainer.cfg.model.input_width}x{self.trainer.cfg.model.input_height}, "
                 f"classes {cfg.classes}")
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
            except (DealRosError, OSError) as exc:  # a foreign / damaged file must not stop the robot
                log.error(f"cannot resume from {self.trainer.checkpoint_path}: {exc}; starting from scratch")
        self.init_tags(cfg.classes, tag_state)
        self.gate = KeyframeGate.from_config(cfg.keyframe)
        self.intake = KeyframeIntake(self.trainer, self.gate)
        self._last_saved_step = self.trainer.step
        self._save_lock = threading.Lock()
        self.loop = TrainingLoop(self.trainer, log, ready=lambda: self.tag_state.known, save=self._save,
                                 sync_every_steps=self.values["weights_sync_steps"])
        self._set_inference_priority(self.values["inference_priority"])

        self.subscribe_pairs(self._on_pair)
        self.create_service(Trigger, "~/save", self._srv_save)
        self.create_service(Trigger, "~/reset", self._srv_reset)
        self.create_service(SetBool, "~/pause", self._srv_pause)
        self.start_health("deal/status", trainer_diagnostics)
        self.loop.start()
        log.info(f"listening: {self.inputs_line()}, tags '{self.resolve_topic_name(TAGS)}'; tags now "
                 f"{list(self.tag_state.tags)}"
                 + ("" if self.tag_state.known else " (unknown: not training until tags are given)"))

    @property
    def config(self) -> DealRosConfig:
        return self.trainer.cfg

    def share_weights(self) -> WeightHandoff:
        """For an in-process segmenter: a handoff that gets the weights now and after every weights_sync_steps."""
        self.loop.handoff = WeightHandoff()
        self.loop.publish_weights()
        return self.loop.handoff

    # -- callbacks: short, never wait for training ------------------------------------------------------
    def _on_pair(self, rgb_msg: Image, depth_msg: Image) -> None:
        """Every synchronised pair: keyframe gate (a time check, then a thumbnail); accepted frames are buffered."""
        problem = self.check_pair(rgb_msg, depth_msg)
        if problem:
            self.skip("RGB-D pair", problem)
            return
        if not self.tag_state.known:
            return
        try:
            unit = self.config.depth.float_unit
            result = self.intake.offer(ru.stamp_s(rgb_msg.header.stamp),
                                       lambda: decode_rgb(rgb_msg, self.topics["rgb"]),
                                       lambda: decode_depth_m(depth_msg, self.topics["depth"], unit),
                                       self.tag_state.tags)
        except DealRosError as exc:  # undecodable image, sizes that differ: this pair only
            self.skip("RGB-D pair", exc)
            return
        if result.degenerate:
            self.get_logger().warning(
                f"keyframe left out, '{self.topics['depth']}' is unusable: {result.degenerate} "
                f"({self.intake.degenerate} so far; is the depth stream running?)", throttle_duration_sec=30.0)
        if result.accepted:
            self.loop.wake()

    def apply_parameters(self, update: ParameterUpdate) -> None:
        values = self.values  # the parameter values in force, this update included
        self.gate.configure(config_from_parameters(values).keyframe)
        self.loop.sync_every_steps = values["weights_sync_steps"]
        self._set_inference_priority(values["inference_priority"])
        if update.config_overrides:
            self.loop.request_config(update.config_overrides)

    def _set_inference_priority(self, share: float) -> None:
        self.trainer.control.yield_share = share if self.trainer.device.type == "cpu" else 0.0

    def _srv_save(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        response.success, response.message = self._save("service")
        return response

    def _srv_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self.trainer.reset()
        self.gate.reset()
        self._last_saved_step = 0
        self.loop.publish_weights()
        response.success, response.message = True, "model, optimizer, step and buffer reset"
        self.get_logger().warning(response.message)
        return response

    def _srv_pause(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        self.loop.set_paused(bool(request.data))
        response.success, response.message = True, ("paused" if self.loop.paused else "training") + \
            f" at step {self.trainer.step}"
        self.get_logger().info(response.message)
        return response

    def _save(self, why: str) -> tuple[bool, str]:
        """Write the checkpoint; the period save (worker) and a service call never write at once, and one waits for
        the other at most SAVE_LOCK_TIMEOUT_S (a write stuck on a dead disk must not hang the service or shutdown)."""
        from deal_ros.training.trainer import SAVE_LOCK_TIMEOUT_S  # loaded with the trainer: torch is not imported here

        if not self._save_lock.acquire(timeout=SAVE_LOCK_TIMEOUT_S):
            message = f"checkpoint ({why}) not written: another save has not finished in {SAVE_LOCK_TIMEOUT_S:g} s"
            self.get_logger().error(message)
            return False, message
        try:
            try:
                path = self.trainer.save()
            except (DealRosError, OSError) as exc:  # disk full, read-only: the previous file is intact (atomic replace)
                self.checkpoint_error = f"checkpoint write failed ({why}) at step {self.trainer.step}: {exc}"
                self.get_logger().error(self.checkpoint_error + "; the previous checkpoint is untouched")
                return False, self.checkpoint_error
            self._last_saved_step = self.trainer.step
            self.checkpoint_error = ""
            self.last_checkpoint = f"{path} at step {self.trainer.step}"
        finally:
            self._save_lock.release()
        self.get_logger().info(f"checkpoint ({why}): {self.last_checkpoint}")
        return True, self.last_checkpoint

    # -- status -----------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        import torch

        from deal_ros.compute.device import describe_device

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
            skipped_frames=self.skipped_frames, sync_warning=self.sync_warning,
            last_checkpoint=self.last_checkpoint, checkpoint_error=self.checkpoint_error,
            requested_device=trainer.cfg.train.device, depth_degenerate=self.intake.degenerate,
            steps_interrupted=trainer.interrupted_steps, inference_yield_s=trainer.control.yield_s,
            trust=trainer.trust.summary(trainer.cfg.trust), indistinct_classes=trainer.indistinct_classes(),
            merge_indistinct=trainer.cfg.pseudo_label.merge_indistinct)

    def request_stop(self) -> None:
        """Start stopping at once: the training step in flight ends at its next layer."""
        self.loop.request_stop()

    def shutdown(self) -> None:
        """Stop the worker (no longer than ~2 s) and write a last checkpoint if steps were taken since the last."""
        if not self.loop.stop(timeout_s=2.0):
            self.get_logger().warning("the training worker did not stop within 2 s; saving the last completed step")
        if self.trainer.step > self._last_saved_step:
            self._save("shutdown")

