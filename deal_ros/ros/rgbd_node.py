"""What both nodes do with their inputs: parameters, tags, synchronised RGB-D pairs, health.

Inputs are subscribed by relative names, as image_pipeline's nodes are: `rgb/image`, `depth/image`
(aligned to colour), `rgb/camera_info` and `tags`; connect them by remapping (the launch files turn
their `rgb_topic:=` arguments into remappings), so `namespace:=robot1` moves inputs and outputs
together. QoS is the standard `qos_overrides.<topic>.subscription.*` parameters. Each node adds
what it does with a pair; every decision is in rclpy-free modules of deal_ros.online.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import String

from deal_ros.config import DealRosConfig
from deal_ros.io.pairs import PairValidator
from deal_ros.online.parameters import ParameterUpdate, all_param_specs, check_parameter_update
from deal_ros.online.status import DiagnosticEntry
from deal_ros.online.tags import TagState, TagUpdate
from deal_ros.ros import _rclpy_util as ru

INPUTS = {"rgb": "rgb/image", "depth": "depth/image"}
"""The synchronised inputs by role: relative names, remapped to the camera's topics."""
IMAGE_TYPE = "sensor_msgs/msg/Image"
CAMERA_INFO = "rgb/camera_info"
TAGS = "tags"


class RGBDNode(Node):
    """A node fed synchronised RGB + aligned depth pairs and the tags of the objects in view.

    role: TRAINER or SEGMENTER (which parameters it declares). tag_state: shared by the nodes of one
    process (then only the first subscribes to `tags`).
    """

    def __init__(self, node_name: str, role: str, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.role = role
        self.values = ru.declare_specs(self, all_param_specs(role))
        self.validator = PairValidator()
        self.skipped_frames = 0
        self.sync_warning: str | None = None
        self.tag_state: TagState = TagState([])
        self.topics: dict[str, str] = {}

    # -- set-up, called by the subclass's __init__ in this order -----------------------------------------
    def init_tags(self, classes: Sequence[str], shared: TagState | None) -> None:
        """Own tags from the `tags` parameter and topic, or the other node's (mirrored into our parameter)."""
        if shared is None:
            self.tag_state = TagState(classes)
            update = self.tag_state.set(self.values["tags"], "parameter 'tags'", explicit=self.values["tags"] != "",
                                        origin=self)
            if update.error:
                self.get_logger().error(update.error)
            self.tags_sub = ru.subscribe(self, String, TAGS, self._on_tags, ru.COMMAND_QOS)
        else:
            self.tag_state = shared
            ru.set_tags_parameter(self, self.tag_state.tags)
        self.tag_state.add_listener(self, self._tags_changed)

    def subscribe_pairs(self, on_pair: Callable[[Image, Image], None]) -> None:
        """RGB + depth through the approximate-time synchroniser; every arrival noted by the sync watchdog."""
        self.topics, self.watchdog, self._pair_subs = ru.subscribe_rgbd(self, INPUTS, self.values, self._seen,
                                                                        self._noted(on_pair))

    def start_health(self, status_topic: str,
                     diagnostics: Callable[[dict[str, Any]], Sequence[DiagnosticEntry]]) -> None:
        """The status JSON and /diagnostics every status_period_s, on the steady clock (sim time may stop)."""
        self.status_pub = self.create_publisher(String, status_topic, 10)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diagnostics = diagnostics
        self.add_on_set_parameters_callback(self._on_parameters)
        self.watchdog.start(time.monotonic())
        ru.steady_timer(self, self.values["status_period_s"], self._publish_health)

    def inputs_line(self) -> str:
        """'rgb '/camera/color/image_raw', depth '...' (best_effort, depth 5)' for the start-up log."""
        named = ", ".join(f"{role} '{topic}'" for role, topic in self.topics.items())
        return f"{named} ({self.watchdog.qos_text})"

    # -- what the subclass provides ---------------------------------------------------------------------
    @property
    def config(self) -> DealRosConfig:
        """The configuration in force (parameter updates are checked against it)."""
        raise NotImplementedError

    def apply_parameters(self, update: ParameterUpdate) -> None:
        """Apply an accepted run-time parameter update (node values and config overrides)."""
        raise NotImplementedError

    def status(self) -> dict[str, Any]:
        raise NotImplementedError

    def request_stop(self) -> None:
        """Start stopping at once (work in flight ends at its next layer)."""

    def shutdown(self) -> None:
        """Finish stopping: join workers, write what must be kept."""

    # -- pairs -------------------------------------------------------------------------------------------
    def check_pair(self, rgb_msg: Image, depth_msg: Image, camera_info: CameraInfo | None = None) -> str:
        """'' when the pair is usable; else why not. Warnings and the first pair's layout are logged once."""
        check = self.validator.check(rgb_msg, depth_msg, camera_info)
        if check is None:
            return ""
        log = self.get_logger()
        for warning in check.warnings:
            log.warning(warning, once=True)
        if not check.ok:
            return "; ".join(check.errors)
        log.info(check.info, once=True)
        return ""

    def skip(self, what: str, why: str | Exception) -> None:
        """Count and log (throttled) an input that cannot be used; the node keeps going."""
        self.skipped_frames += 1
        self.get_logger().error(f"skipping {what}: {why}", throttle_duration_sec=5.0)

    def _noted(self, on_pair: Callable[[Image, Image], None]) -> Callable[[Image, Image], None]:
        def callback(rgb_msg: Image, depth_msg: Image) -> None:
            self.watchdog.note_pair(time.monotonic())
            on_pair(rgb_msg, depth_msg)

        return callback

    def _seen(self, msg: Image, role: str) -> None:
        self.watchdog.note_input(role, time.monotonic(), ru.stamp_s(msg.header.stamp))

    # -- tags and parameters ----------------------------------------------------------------------------
    def _on_tags(self, msg: String) -> None:
        self._log_tags(self.tag_state.set(msg.data, f"topic '{self.resolve_topic_name(TAGS)}'"))

    def _tags_changed(self, update: TagUpdate) -> None:
        """Tags changed elsewhere (topic, the other node's parameter): mirror them into our `tags` parameter."""
        ru.set_tags_parameter(self, update.tags)

    def _log_tags(self, update: TagUpdate) -> None:
        if update.error:
            self.get_logger().error(update.error)
        elif update.changed:
            self.get_logger().info(f"tags now {list(update.tags)}")

    def _on_parameters(self, params: list[Parameter]) -> SetParametersResult:
        update = check_parameter_update(self.role, self.config, {p.name: p.value for p in params})
        if update.ok and "tags" in update.node_values:
            result = self.tag_state.set(update.node_values["tags"], "parameter 'tags'", origin=self)
            self._log_tags(result)
            if result.error:
                return ru.set_parameters_result(result.error)
        if not update.ok:
            self.get_logger().error(f"parameter change refused: {update.error}")
            return ru.set_parameters_result(update.error)
        self.values.update(update.node_values)
        self.values.update(update.config_overrides)
        self.watchdog.timeout_s = self.values["sync.stale_timeout_s"]
        self.apply_parameters(update)
        return ru.set_parameters_result("")

    # -- health -----------------------------------------------------------------------------------------
    def _publish_health(self) -> None:
        """Feed the sync watchdog, log a stale-sync warning, publish the status JSON and the diagnostics."""
        now = time.monotonic()
        for role, topic in self.topics.items():
            types = [info.topic_type for info in self.get_publishers_info_by_topic(topic)]
            self.watchdog.note_publishers(role, types.count(IMAGE_TYPE),
                                          tuple(sorted({t for t in types if t != IMAGE_TYPE})))
        for line in self.watchdog.wrong_types():
            self.get_logger().error(line, throttle_duration_sec=30.0)
        warning = self.watchdog.check(now)
        if warning:
            self.get_logger().warning(warning)
            self.sync_warning = warning
        elif self.watchdog.stale_for(now) < self.watchdog.timeout_s:
            self.sync_warning = None
        status = self.status()
        self.status_pub.publish(String(data=json.dumps(status)))
        self.diag_pub.publish(ru.diagnostic_array(self, self._diagnostics(status), "deal_ros"))

