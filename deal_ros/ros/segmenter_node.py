"""Segmenter node: latest RGB-D frame in, mask / confidence / pseudo_label / overlay / points out.

Inference runs in its own thread on the newest synchronised pair only (no backlog; the age of
the frame is in the status). Standalone it hot-reloads the trainer's checkpoint; in the onboard
process it shares the trainer's model and lock (no file round trip).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from sensor_msgs_py import point_cloud2
from std_msgs.msg import String
from std_srvs.srv import Trigger

from deal_ros.io.image_codec import ImageDecodeError, decode_depth_m, decode_rgb
from deal_ros.ros import _rclpy_util as ru
from deal_ros.ros.frames import PairValidator
from deal_ros.ros.hot_reload import CheckpointPoller
from deal_ros.ros.outputs import (
    POINT_FIELDS,
    class_map,
    class_map_json,
    output_image_fields,
    scale_intrinsics,
    semantic_points,
)
from deal_ros.ros.params import SEGMENTER, all_param_specs, check_parameter_update, config_from_parameters
from deal_ros.ros.slot import LatestSlot, stamp_age_s
from deal_ros.ros.status import RateMeter, segmenter_diagnostics, segmenter_status
from deal_ros.ros.tagging import TagState

try:
    from vision_msgs.msg import LabelInfo, VisionClass
except ImportError:  # vision_msgs is optional: the String class map is always published
    LabelInfo = None


class SegmenterNode(Node):
    """`deal_segmenter`: see README 'ROS 2 nodes'. Pass model/model_lock to share a trainer's network."""

    def __init__(self, node_name: str = "deal_segmenter", model: Any = None, model_lock: Any = None,
                 tag_state: TagState | None = None, step_source: Callable[[], int] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        from deal_ros.device import describe_device
        from deal_ros.segmenter import Segmenter

        log = self.get_logger()
        self.values = ru.declare_specs(self, all_param_specs(SEGMENTER))
        self.cfg = config_from_parameters(self.values)
        # standalone: our own lock, so a ~/reload from the service thread never swaps weights mid-forward
        self.segmenter = Segmenter(self.cfg, model=model, model_lock=model_lock or threading.RLock())
        self.shared = model is not None
        self.step_source = step_source
        log.info(f"device: {describe_device(self.segmenter.device)} (train.device '{self.cfg.train.device}'), "
                 + ("sharing the trainer's model in this process" if self.shared else "standalone"))
        self.checkpoint = self._checkpoint_path()
        self.poller = CheckpointPoller(self.checkpoint)
        self.reload_error = ""
        self._last_poll = 0.0
        if not self.shared:
            self._reload(initial=True)
        self.shared_tags = tag_state is not None
        self.tag_state = tag_state or TagState(self.cfg.classes)
        if not self.shared_tags:
            update = self.tag_state.set(self.values["tags"], "parameter 'tags'", explicit=self.values["tags"] != "")
            if update.error:
                log.error(update.error)
        self.validator = PairValidator()
        self.slot: LatestSlot[tuple[Any, Any]] = LatestSlot()
        self.camera_info: CameraInfo | None = None
        self.skipped_frames = 0
        self.fps = RateMeter()
        self.last_age: float | None = None
        self.last_wait: float | None = None
        self.last_inference: float | None = None
        self.frames = 0

        reliability = self.values["qos.reliability"]
        qos, self.topics, self.watchdog, self._subs = ru.subscribe_rgbd(self, self.values, self._seen,
                                                                        self._on_pair)
        info_topic = self.values["camera_info_topic"]
        self.create_subscription(CameraInfo, info_topic, self._on_camera_info, qos,
                                 event_callbacks=ru.qos_event_callbacks(self, info_topic, reliability))
        if not self.shared_tags:
            self.create_subscription(String, self.values["tags_topic"], self._on_tags, ru.COMMAND_QOS)

        self.pubs = {name: self.create_publisher(Image, f"deal/{name}", ru.OUTPUT_QOS)
                     for name in ("mask", "pseudo_label", "confidence", "overlay")}
        self.points_pub = self.create_publisher(PointCloud2, "deal/points", ru.OUTPUT_QOS)
        self.status_pub = self.create_publisher(String, "deal/segmenter_status", 10)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._publish_class_map()
        self.create_service(Trigger, "~/reload", self._srv_reload)
        self.add_on_set_parameters_callback(self._on_parameters)
        self.watchdog.start(time.monotonic())
        self.create_timer(self.values["status_period_s"], self._on_status_timer)
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._work, name="deal_segmenter_worker", daemon=True)
        self._worker.start()
        log.info(f"listening: rgb '{self.topics['rgb']}', depth '{self.topics['depth']}', camera_info "
                 f"'{info_topic}' ({reliability}); publishing deal/mask, deal/confidence, deal/pseudo_label, "
                 "deal/overlay, deal/points, deal/class_map")

    def _checkpoint_path(self) -> str:
        from pathlib import Path

        return str(Path(self.cfg.checkpoint.directory) / "model.safetensors")

    def _publish_class_map(self) -> None:
        names = class_map(self.cfg.classes)
        self.class_names_pub = self.create_publisher(String, "deal/class_names", ru.LATCHED_QOS)
        self.class_names_pub.publish(String(data=class_map_json(self.cfg.classes)))
        if LabelInfo is not None:
            self.label_info_pub = self.create_publisher(LabelInfo, "deal/class_map", ru.LATCHED_QOS)
            msg = LabelInfo()
            msg.header.stamp = self.get_clock().now().to_msg()
            msg.class_map = [VisionClass(class_id=i, class_name=name) for i, name in names]
            msg.threshold = 0.0
            self.label_info_pub.publish(msg)
        else:
            self.get_logger().info("vision_msgs not found: class map only on deal/class_names (JSON)")

    # -- callbacks ---------------------------------------------------------------------------------------
    def _seen(self, msg: Any, name: str) -> None:
        self.watchdog.note_input(name, time.monotonic(), ru.stamp_s(msg.header.stamp))

    def _on_pair(self, rgb: Any, depth: Any) -> None:
        self.watchdog.note_pair(time.monotonic())
        self.slot.put((rgb, depth))

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self.camera_info = msg

    def _on_tags(self, msg: String) -> None:
        update = self.tag_state.set(msg.data, f"topic '{self.values['tags_topic']}'")
        if update.error:
            self.get_logger().error(update.error)

    def _on_parameters(self, params: list[Any]) -> Any:
        update = check_parameter_update(SEGMENTER, self.cfg, {p.name: p.value for p in params})
        if update.ok and "tags" in update.node_values:
            result = self.tag_state.set(update.node_values["tags"], "parameter 'tags'")
            if result.error:
                self.get_logger().error(result.error)
                return ru.set_parameters_result(result.error)
        if not update.ok:
            self.get_logger().error(f"parameter change refused: {update.error}")
            return ru.set_parameters_result(update.error)
        for name, value in update.node_values.items():
            self.values[name] = value
        self.watchdog.timeout_s = self.values["sync.stale_timeout_s"]
        if update.config_overrides:
            self.cfg = self.cfg.updated(update.config_overrides)
            self.segmenter.cfg = self.cfg  # thresholds are read per frame
        return ru.set_parameters_result("")

    def _srv_reload(self, request: Any, response: Any) -> Any:
        if self.shared:
            response.success, response.message = True, "sharing the trainer's model: always current"
            return response
        self.poller.loaded_step = -1
        self.poller.mark_failed()  # forget the file signature: read it again
        response.success = self._reload()
        response.message = self.reload_error or f"loaded step {self.segmenter.step} from {self.checkpoint}"
        return response

    def _reload(self, initial: bool = False) -> bool:
        result = self.poller.poll()
        if result.step is None:
            if initial and result.note:
                self.get_logger().info(f"{self.checkpoint}: {result.note}; starting from initial weights")
            return False
        try:
            step = self.segmenter.load(self.checkpoint)
        except Exception as exc:  # replaced mid-read, other classes/architecture: keep the current weights
            self.poller.mark_failed()
            self.reload_error = f"reload of {self.checkpoint} failed: {exc}"
            self.get_logger().error(self.reload_error, throttle_duration_sec=10.0)
            return False
        self.poller.mark_loaded(step)
        self.reload_error = ""
        self.get_logger().info(f"loaded weights of step {step} from {self.checkpoint}")
        return True

    # -- inference thread ------------------------------------------------------------------------------
    def _work(self) -> None:
        while not self._stop.is_set():
            period = self.values["reload_period_s"]
            if not self.shared and period > 0 and time.monotonic() - self._last_poll >= period:
                self._last_poll = time.monotonic()
                self._reload()
            taken = self.slot.take(timeout=0.2)
            if taken is None:
                continue
            self.last_wait = taken.wait_s
            try:
                self._process(*taken.item)
            except (ImageDecodeError, ValueError) as exc:
                self.skipped_frames += 1
                self.get_logger().error(f"skipping frame: {exc}", throttle_duration_sec=5.0)
            except Exception as exc:  # keep serving: one bad frame must not end the node
                self.skipped_frames += 1
                self.get_logger().error(f"inference failed: {exc!r}", throttle_duration_sec=5.0)

    def _process(self, rgb_msg: Any, depth_msg: Any) -> None:
        log = self.get_logger()
        check = self.validator.check(rgb_msg, depth_msg, self.camera_info)
        if check is not None:
            for warning in check.warnings:
                log.warning(warning, once=True)
            if not check.ok:
                raise ValueError("; ".join(check.errors))
            log.info(check.info, once=True)
        header = rgb_msg.header
        self.last_age = stamp_age_s(ru.stamp_s(self.get_clock().now().to_msg()), ru.stamp_s(header.stamp))
        start = time.perf_counter()
        rgb = decode_rgb(rgb_msg, self.topics["rgb"])
        depth_m = decode_depth_m(depth_msg, self.topics["depth"])
        want_pseudo = (self.values["publish_pseudo_label"] and self.tag_state.known
                       and self.pubs["pseudo_label"].get_subscription_count() > 0)
        tags = list(self.tag_state.tags) if want_pseudo else None
        result = self.segmenter(rgb, depth_m, tags)
        want_overlay = self.pubs["overlay"].get_subscription_count() > 0
        fields = output_image_fields(result, rgb, with_overlay=want_overlay, alpha=self.values["overlay_alpha"])
        for name, image_fields in fields.items():
            self.pubs[name].publish(ru.image_msg(header, image_fields))
        info = self.camera_info
        if info is not None and self.points_pub.get_subscription_count() > 0:
            height, width = depth_m.shape
            k = scale_intrinsics(info.k, (int(info.width), int(info.height)), (width, height))
            points = semantic_points(depth_m, result.mask, k, stride=self.values["points.stride"],
                                     min_m=self.cfg.depth.min_m, max_m=self.cfg.depth.max_m, skip_label=None)
            self.points_pub.publish(point_cloud2.create_cloud(header, ru.point_fields(POINT_FIELDS), points))
        self.last_inference = time.perf_counter() - start
        self.frames += 1
        self.fps.tick()

    # -- status -------------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        from deal_ros.device import describe_device

        step = self.step_source() if self.step_source is not None else self.segmenter.step
        return segmenter_status(model_step=step, frames=self.frames, dropped=self.slot.dropped,
                                frame_age_s=self.last_age, wait_s=self.last_wait, inference_s=self.last_inference,
                                fps=self.fps.rate(), device=describe_device(self.segmenter.device),
                                reload_error=self.reload_error, sync_warning=self._sync_warning,
                                skipped_frames=self.skipped_frames, tags=self.tag_state.tags)

    _sync_warning: str | None = None

    def _on_status_timer(self) -> None:
        self._sync_warning = ru.publish_health(self, segmenter_diagnostics)

    def shutdown(self) -> None:
        self._stop.set()
        self.slot.close()
        self._worker.join(timeout=10.0)


def main(argv: list[str] | None = None) -> None:
    from deal_ros.ros.trainer_node import run_nodes

    sys.exit(run_nodes(lambda: [SegmenterNode()], argv))


if __name__ == "__main__":
    main()
