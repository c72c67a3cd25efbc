"""The onboard wiring without rclpy: the nodes' parameter defaults, and frames played on their own clock."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from deal_ros.config import ConfigError
from deal_ros.online.live_rig import is_node_parameter, node_values, play
from deal_ros.online.parameters import NodeParameters


def test_node_values_are_the_node_defaults_with_overrides_checked():
    defaults = node_values()
    node = NodeParameters()
    assert defaults["mask.min_model_step"] == node.mask.min_model_step
    assert defaults["inference_priority"] == node.inference_priority
    assert defaults["weights_sync_steps"] == node.weights_sync_steps
    assert node_values({"mask.min_model_step": "50"})["mask.min_model_step"] == 50
    with pytest.raises(ConfigError, match="inference_priority"):
        node_values({"inference_priority": 2.0})
    with pytest.raises(ConfigError, match=r"unknown node parameter 'train\.lr'"):
        node_values({"train.lr": 0.1})
    assert is_node_parameter("mask.while_warming_up") and not is_node_parameter("train.lr")


@dataclass
class Frame:
    stamp_ns: int
    tags: list[str]
    tags_known: bool = True
    rgb: np.ndarray = field(default_factory=lambda: np.zeros((2, 2, 3), np.uint8))
    depth_m: np.ndarray = field(default_factory=lambda: np.ones((2, 2), np.float32))


class Recorder:
    """Stands in for LiveRig: what the pair callbacks were given."""

    def __init__(self) -> None:
        self.offers: list[tuple[float, list[str] | None]] = []

    def offer(self, stamp_s, rgb, depth_m, tags, frame=None):
        self.offers.append((stamp_s, tags))


def test_play_offers_every_frame_in_order_with_tags_once_known():
    frames = [Frame(0, [], tags_known=False), Frame(10_000_000, ["mug"]), Frame(20_000_000, ["mug", "box"])]
    rig = Recorder()
    offered = []
    played = play(rig, frames, rate=100.0, on_offer=lambda f, t: offered.append(f))  # type: ignore[arg-type]
    assert played.frames == 3 and offered == frames
    assert rig.offers == [(0.0, None), (0.01, ["mug"]), (0.02, ["mug", "box"])]
    assert played.end_s >= played.start_s


def test_play_refuses_a_rate_of_zero():
    with pytest.raises(ValueError, match="rate"):
        play(Recorder(), [], rate=0.0)  # type: ignore[arg-type]
