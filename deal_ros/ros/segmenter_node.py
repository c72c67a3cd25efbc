"""Segmenter node: latest RGB-D frame in, mask / confidence / pseudo_label / overlay / points out.

Inference runs in its own thread on the newest synchronised pair only (no backlog). Standalone it
hot-reloads the trainer's checkpoint; in the onboard process it runs its own copy of the network and
swaps in the trainer's weights between frames (deal_ros.compute.live), so a frame never waits for a training
step. Until the weights have trained `mask.min_model_step` steps the node is "warming up": masks are
withheld (or flagged) and every frame's deal/mask_info says which model step it came from. Until the trainer
trusts the masks of the weights in use (in-process: the weight snapshot's verdict; standalone: the checkpoint's,
recorded at save time) they are marked `trusted: false` in deal/mask_info, or withheld (`mask.until_trusted`).
"""

from __future__ import annotations

import json
import threading
import time
from typing import TYPE_CHECKING, Any

from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from sensor_msgs_py import point_cloud2
from std_msgs.msg import String
from std_srvs.srv import Trigger

from deal_ros.compute.live import StepControl, WeightHandoff
from deal_ros.config import DealRosConfig
from deal_ros.errors import DealRosError
from deal_ros.io.image_codec import decode_depth_m, decode_rgb
from deal_ros.online.hot_reload import CheckpointPoller
from deal_ros.online.outputs import (
    POINT_FIELDS,
    class_map,
    class_map_json,
    mask_info,
    output_image_fields,
    scale_intrinsics,
    semantic_points,
)
from deal_ros.online.parameters import SEGMENTER, ParameterUpdate, config_from_parameters
from deal_ros.online.slot import LatestSlot, Taken
from deal_ros.online.status import (
    LatencyStats,
    RateMeter,
    clock_note,
    masks_for_planners,
    segmenter_diagnostics,
    segmenter_status,
    stamp_latency_s,
    warming_up,
)
from deal_ros.online.tags import TagState
from deal_ros.ros import _rclpy_util as ru
from deal_ros.ros.rgbd_node import CAMERA_INFO, RGBDNode
from deal_ros.storage.checkpoint import checkpoint_file

if TYPE_CHECKING:
    import torch

try:
    from vision_msgs.msg import LabelInfo, VisionClass
except ImportError:  # vision_msgs is optional: the String class map is always published
    LabelInfo = None

PLANNER_OUTPUTS = ("mask", "confidence")
"""Image outputs withheld while warming up (with deal/points); overlay and pseudo_label are for people."""


class SegmenterNode(RGBDNode):
    """`deal_segmenter`: see README 'ROS 2 nodes'. In-process: `weights` (the trainer's handoff), `control`,
    `device`, `tag_state` (shared with the trainer)."""

    def __init__(self, node_name: str = "deal_segmenter", weights: WeightHandoff | None = None,
                 control: StepControl | None = None, device: str | torch.device | None = None,
                 tag_state: TagState | None = None, **kwargs: Any) -> None:
        super().__init__(node_name, SEGMENTER, **kwargs)
        from deal_ros.compute.device import describe_device
        from deal_ros.inference.segmenter import Segmenter

        log = self.get_logger()
        self.cfg = config_from_parameters(self.values)
        # our own lock, so a ~/reload from the service thread never swaps weights mid-forward
        self.segmenter = Segmenter(self.cfg, device=device, model_lock=threading.RLock(), weights=weights,
                                   control=control)
        self.shared = weights is not None
        if self.shared:
            self.segmenter.refresh()
        log.info(f"device: {describe_device(self.segmenter.device)} (train.device '{self.cfg.train.device}'), "
                 + ("own copy of the network, weights from the in-process trainer" if self.shared else "standalone"))
        self.checkpoint = str(checkpoint_file(self.cfg.checkpoint.directory))
        self.poller = CheckpointPoller(self.checkpoint)
        self.reload_error = ""
        self._last_poll = 0.0
        if not self.shared:
            self._reload(initial=True)
        self.init_tags(self.cfg.classes, tag_state)
        self.slot: LatestSlot[tuple[Image, Image]] = LatestSlot()
        self.camera_info: CameraInfo | None = None
        self.fps = RateMeter()
        self.times = LatencyStats()
        self.clock_note = ""
        self.frames = 0
        self.masks_withheld = 0
        self._trusted_seen: bool | None = None

        self.subscribe_pairs(self._on_pair)
        self.camera_info_sub = ru.subscribe(self, CameraInfo, CAMERA_INFO, self._on_camera_info, ru.IMAGE_QOS)
        self.pubs = {name: self.create_publisher(Image, f"deal/{name}", ru.OUTPUT_QOS)
                     for name in ("mask", "pseudo_label", "confidence", "overlay")}
        self.points_pub = self.create_publisher(PointCloud2, "deal/points", ru.OUTPUT_QOS)
        self.mask_info_pub = self.create_publisher(String, "deal/mask_info", ru.OUTPUT_QOS)
        self._publish_class_map()
        self.create_service(Trigger, "~/reload", self._srv_reload)
        self.start_health("deal/segmenter_status", segmenter_diagnostics)
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._work, name="deal_segmenter_worker", daemon=True)
        self._worker.start()
        log.info(f"listening: {self.inputs_line()}, camera_info '{self.resolve_topic_name(CAMERA_INFO)}'; "
                 "publishing deal/mask, deal/confidence, deal/pseudo_label, deal/overlay, deal/points, "
                 "deal/mask_info, deal/class_map; masks "
                 + ("withheld" if self.values["mask.while_warming_up"] == "withhold" else "flagged")
                 + f" until model step {self.values['mask.min_model_step']}, "
                 + ("withheld" if self.values["mask.until_trusted"] == "withhold" else "marked")
                 + " until the trainer trusts them")

    @property
    def config(self) -> DealRosConfig:
        return self.cfg

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
    def _on_pair(self, rgb: Image, depth: Image) -> None:
        self.slot.put((rgb, depth))

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self.camera_info = msg

    def apply_parameters(self, update: ParameterUpdate) -> None:
        if update.config_overrides:
            self.cfg = self.cfg.updated(update.config_overrides)
            self.segmenter.cfg = self.cfg  # thresholds are read per frame

    def _srv_reload(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        if self.shared:
            response.success = True
            response.message = f"weights come from the in-process trainer (model step {self.segmenter.step})"
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
            try:
                self._process(taken)
            except DealRosError as exc:  # this frame cannot be used (bad pair, undecodable image)
                self.skip("frame", exc)
            except Exception as exc:  # keep serving: one bad frame must not end the node
                if self._stop.is_set() or not self.context.ok():
                    return  # stopping: the publishers are going away
                self.skipped_frames += 1
                self.get_logger().error(f"inference failed: {exc!r}", throttle_duration_sec=5.0)

    def _process(self, taken: Taken[tuple[Image, Image]]) -> None:
        rgb_msg, depth_msg = taken.item
        problem = self.check_pair(rgb_msg, depth_msg, self.camera_info)
        if problem:
            self.skip("frame", problem)
            return
        header = rgb_msg.header
        start = time.perf_counter()
        rgb = decode_rgb(rgb_msg, self.topics["rgb"])
        depth_m = decode_depth_m(depth_msg, self.topics["depth"], self.cfg.depth.float_unit)
        want_pseudo = (self.values["publish_pseudo_label"] and self.tag_state.known
                       and self.pubs["pseudo_label"].get_subscription_count() > 0)
        tags = list(self.tag_state.tags) if want_pseudo else None
        network_start = time.perf_counter()
        result = self.segmenter(rgb, depth_m, tags)
        inference_s = time.perf_counter() - network_start
        step, trusted = self.segmenter.step, self.segmenter.trusted
        warming = warming_up(step, self.values["mask.min_model_step"])
        for_planners = masks_for_planners(warming, trusted, self.values["mask.while_warming_up"],
                                          self.values["mask.until_trusted"])
        self._note_trust(trusted, step)
        want_overlay = self.pubs["overlay"].get_subscription_count() > 0
        fields = output_image_fields(result, rgb, with_overlay=want_overlay, alpha=self.values["overlay_alpha"])
        published = [name for name in fields if for_planners or name not in PLANNER_OUTPUTS]
        for name in published:
            self.pubs[name].publish(ru.image_msg(header, fields[name]))
        info = self.camera_info
        if for_planners and info is not None and self.points_pub.get_subscription_count() > 0:
            height, width = depth_m.shape
            k = scale_intrinsics(info.k, (int(info.width), int(info.height)), (width, height))
            points = semantic_points(depth_m, result.mask, k, stride=self.values["points.stride"],
                                     min_m=self.cfg.depth.min_m, max_m=self.cfg.depth.max_m, skip_label=None)
            self.points_pub.publish(point_cloud2.create_cloud(header, ru.point_fields(POINT_FIELDS), points))
            published.append("points")
        if not for_planners:
            self.masks_withheld += 1
        self.mask_info_pub.publish(String(data=json.dumps(mask_info(header, step, warming, published, trusted))))
        now_s = ru.stamp_s(self.get_clock().now().to_msg())
        stamp_s = ru.stamp_s(header.stamp)
        self.clock_note = clock_note(now_s, stamp_s)
        self.times.add(latency_s=stamp_latency_s(now_s, stamp_s), receive_latency_s=time.monotonic() - taken.put_time,
                       wait_s=taken.wait_s, inference_s=inference_s, processing_s=time.perf_counter() - start)
        self.frames += 1
        self.fps.tick()

    def _note_trust(self, trusted: bool, step: int) -> None:
        """One log line when the trust of the weights in use changes (masks start or stop going out if withheld)."""
        if trusted == self._trusted_seen:
            return
        if self._trusted_seen is not None or trusted:  # the first frame logs only trust, not its absence
            withhold = self.values["mask.until_trusted"] == "withhold"
            if trusted:
                line = f"masks trusted from model step {step}" + (": publishing deal/mask" if withhold else "")
            else:
                line = f"masks no longer trusted at model step {step}" + (": withholding deal/mask" if withhold else "")
            self.get_logger().info(line)
        self._trusted_seen = trusted

    # -- status -------------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        from deal_ros.compute.device import describe_device

        return segmenter_status(
            model_step=self.segmenter.step, min_model_step=self.values["mask.min_model_step"],
            withhold=self.values["mask.while_warming_up"] == "withhold", frames=self.frames,
            masks_withheld=self.masks_withheld, dropped=self.slot.dropped, times=self.times.summary(),
            fps=self.fps.rate(), device=describe_device(self.segmenter.device), reload_error=self.reload_error,
            sync_warning=self.sync_warning, skipped_frames=self.skipped_frames, tags=self.tag_state.tags,
            clock_note=self.clock_note, trusted=self.segmenter.trusted,
            withhold_until_trusted=self.values["mask.until_trusted"] == "withhold")

    def request_stop(self) -> None:
        self._stop.set()
        self.slot.close()
        self.segmenter.interrupt()  # a frame in flight ends at its next layer

    def shutdown(self) -> None:
        """Stop the inference thread (a frame in flight stops at its next layer)."""
        self.request_stop()
        self._worker.join(timeout=2.0)

