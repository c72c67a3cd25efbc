"""The few rclpy-facing helpers the nodes share: parameters, QoS, messages. Imports rclpy (not for CI).

Works on Humble and Jazzy: only add_on_set_parameters_callback (no pre/post set callbacks), and
the QoS event classes from rclpy.event_handler (Jazzy) or rclpy.qos_event (Humble).
"""

from __future__ import annotations

import array
import copy
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import rclpy.logging
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import Image, PointField

from deal_ros.config import ConfigError
from deal_ros.online.parameters import ParamSpec
from deal_ros.online.status import DiagnosticEntry
from deal_ros.online.sync_health import SyncWatchdog
from deal_ros.online.tags import tags_parameter_value

try:  # Jazzy and newer
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import SubscriptionEventCallbacks  # type: ignore[no-redef, unused-ignore]

if TYPE_CHECKING:
    from builtin_interfaces.msg import Time
    from rclpy.subscription import Subscription
    from rclpy.timer import Timer
    from std_msgs.msg import Header


def declare_specs(node: Node, specs: Iterable[ParamSpec]) -> dict[str, Any]:
    """Declare every spec with its descriptor; returns the values (file/launch overrides applied)."""
    values: dict[str, Any] = {}
    for spec in specs:
        descriptor = ParameterDescriptor(description=spec.describe(), read_only=not spec.runtime,
                                         dynamic_typing=spec.dynamic)
        if spec.choices:
            descriptor.additional_constraints = "one of: " + ", ".join(spec.choices)
        bounds = spec.bounds
        if bounds.low is not None and bounds.high is not None and not spec.dynamic:
            if spec.kind == "double":
                descriptor.floating_point_range = [FloatingPointRange(
                    from_value=float(bounds.low), to_value=float(bounds.high), step=0.0)]
            elif spec.kind == "integer":
                descriptor.integer_range = [IntegerRange(from_value=int(bounds.low), to_value=int(bounds.high),
                                                         step=int(bounds.step))]
        try:
            param = node.declare_parameter(spec.name, spec.default, descriptor)
        except InvalidParameterTypeException as exc:
            raise ConfigError(f"parameter '{spec.name}' has the wrong type in the parameter file / launch "
                              f"arguments (expected {spec.kind}; write 1.0, not 1, for a double): {exc}") from None
        except InvalidParameterValueException as exc:
            raise ConfigError(f"parameter '{spec.name}': {exc}") from None
        values[spec.name] = param.value
    return values


class RosLogHandler(logging.Handler):
    """Python logging -> the ROS log: the core's warnings (device fallback, OOM, non-finite loss) reach
    /rosout with ROS formatting instead of Python's bare last-resort stderr line."""

    def emit(self, record: logging.LogRecord) -> None:
        logger = rclpy.logging.get_logger(record.name.replace(".", "_"))
        if record.levelno >= logging.ERROR:
            logger.error(self.format(record))
        elif record.levelno >= logging.WARNING:
            logger.warning(self.format(record))
        else:
            logger.info(self.format(record))


def route_python_logging() -> None:
    """Send deal_ros' Python log records (INFO and up) to the ROS log, once."""
    package = logging.getLogger("deal_ros")
    if not any(isinstance(h, RosLogHandler) for h in package.handlers):
        package.addHandler(RosLogHandler())
        package.setLevel(logging.INFO)
        package.propagate = False


def steady_timer(node: Node, period_s: float, callback: Callable[[], None]) -> Timer:
    """A timer on the steady clock: health keeps coming when a replayed bag's sim time stops."""
    return node.create_timer(period_s, callback, clock=Clock(clock_type=ClockType.STEADY_TIME))


def set_tags_parameter(node: Node, tags: Sequence[str]) -> None:
    """Mirror the current tags into the node's `tags` parameter (what `ros2 param get` shows)."""
    value = tags_parameter_value(tags)
    kind = Parameter.Type.STRING_ARRAY if isinstance(value, list) else Parameter.Type.STRING
    results = node.set_parameters([Parameter("tags", kind, value)])
    if not results[0].successful:
        node.get_logger().error(f"could not mirror tags {list(tags)} into the 'tags' parameter: {results[0].reason}")


def set_parameters_result(error: str) -> SetParametersResult:
    return SetParametersResult(successful=not error, reason=error)


IMAGE_QOS = qos_profile_sensor_data
"""Camera inputs: rclpy's sensor-data profile (best_effort hears every camera driver; keep_last, depth 5: shallow).
Change it per topic with the standard `qos_overrides.<topic>.subscription.{reliability,depth,history}` parameters
(qos_overriding_options)."""

QOS_OVERRIDES = QoSOverridingOptions.with_default_policies()
"""Every subscription takes the standard qos_overrides parameters (read-only, set at start-up)."""


def qos_text(profile: QoSProfile) -> str:
    """'best_effort, depth 5': the QoS a subscription ended up with, for logs and the sync watchdog."""
    reliability = "reliable" if profile.reliability == ReliabilityPolicy.RELIABLE else "best_effort"
    return f"{reliability}, depth {profile.depth}"


OUTPUT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=2, reliability=ReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.VOLATILE)
"""Outputs: reliable (heard by reliable and best-effort subscribers alike), shallow (no backlog)."""

LATCHED_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
"""The class map: late subscribers get the last message (a subscriber must ask for transient_local too)."""

COMMAND_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE)


def qos_event_callbacks(node: Node, topic: str) -> SubscriptionEventCallbacks:
    """Log incompatible QoS loudly: the middleware drops publishers of an incompatible QoS silently otherwise."""

    def on_incompatible(event: object) -> None:
        node.get_logger().error(
            f"incompatible QoS on '{topic}': a publisher offers a QoS our subscription cannot match "
            f"(policy id {getattr(event, 'last_policy_kind', '?')}, {getattr(event, 'total_count', '?')} times); "
            f"set qos_overrides.{topic}.subscription.reliability to match the publisher (best_effort hears everyone)")

    return SubscriptionEventCallbacks(incompatible_qos=on_incompatible)


def to_uint8_array(data: bytes | bytearray | memoryview) -> array.array[int]:
    """Bytes-like -> array.array('B'), the fast path of rclpy's uint8[] setter (one memcpy)."""
    out = array.array("B")
    out.frombytes(data)
    return out


def image_msg(header: Header, fields: dict[str, Any]) -> Image:
    """sensor_msgs/Image from deal_ros.io.image_fields output and the input's header."""
    msg = Image()
    msg.header = header
    msg.height, msg.width = fields["height"], fields["width"]
    msg.encoding, msg.is_bigendian, msg.step = fields["encoding"], fields["is_bigendian"], fields["step"]
    msg.data = to_uint8_array(fields["data"])
    return msg


def point_fields(spec: Sequence[tuple[str, int, int, int]]) -> list[PointField]:
    return [PointField(name=n, offset=o, datatype=d, count=c) for n, o, d, c in spec]


def stamp_s(stamp: Time) -> float:
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


def diagnostic_array(node: Node, entries: Sequence[DiagnosticEntry], hardware_id: str) -> DiagnosticArray:
    msg = DiagnosticArray()
    msg.header.stamp = node.get_clock().now().to_msg()
    for entry in entries:
        status = DiagnosticStatus(level=bytes([entry.level]), name=f"{node.get_name()}: {entry.name}",
                                  message=entry.message[:1000], hardware_id=hardware_id)
        status.values = [KeyValue(key=k, value=v) for k, v in entry.values.items()]
        msg.status.append(status)
    return msg


def subscribe(node: Node, msg_type: type, name: str, callback: Callable[[Any], None], qos: QoSProfile) -> Subscription:
    """A subscription by relative `name` (remap it), with qos_overrides parameters and incompatible-QoS logging."""
    topic = node.resolve_topic_name(name)
    return node.create_subscription(msg_type, name, callback, own_copy(qos),
                                    event_callbacks=qos_event_callbacks(node, topic),
                                    qos_overriding_options=QOS_OVERRIDES)


def own_copy(qos: QoSProfile) -> QoSProfile:
    """A fresh profile for one subscription: rclpy applies a topic's qos_overrides by changing the profile it is
    given, so a shared one would carry one topic's override to every other subscription."""
    return copy.copy(qos)


def subscribe_rgbd(node: Node, names: dict[str, str], values: dict[str, Any], on_seen: Callable[[Image, str], None],
                   on_pair: Callable[[Image, Image], None]) -> tuple[dict[str, str], SyncWatchdog, list[object]]:
    """RGB + aligned depth (relative `names` {'rgb': ..., 'depth': ...}) through message_filters'
    ApproximateTimeSynchronizer, sensor-data QoS unless overridden, every message noted by the sync watchdog.

    Returns ({'rgb': resolved topic, 'depth': resolved topic}, watchdog, [synchronizer, *subscribers]) — keep
    the list alive for as long as the node runs.
    """
    import message_filters

    topics = {role: node.resolve_topic_name(name) for role, name in names.items()}
    subs = []
    for role, name in names.items():
        sub = message_filters.Subscriber(node, Image, name, qos_profile=own_copy(IMAGE_QOS),
                                         event_callbacks=qos_event_callbacks(node, topics[role]),
                                         qos_overriding_options=QOS_OVERRIDES)
        sub.registerCallback(on_seen, role)
        subs.append(sub)
    texts = sorted({qos_text(sub.sub.qos_profile) for sub in subs})
    watchdog = SyncWatchdog(list(topics.items()), values["sync.stale_timeout_s"], values["sync.slop"],
                            " / ".join(texts))
    sync = message_filters.ApproximateTimeSynchronizer(subs, values["sync.queue_size"], values["sync.slop"])
    sync.registerCallback(on_pair)
    return topics, watchdog, [sync, *subs]
