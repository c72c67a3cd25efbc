"""Trainer and segmenter in one process sharing ONE model (the default on the robot).

The segmenter gets the trainer's network and lock: no checkpoint round trip, no second copy in
GPU memory (CUDA tensors cannot be shared between processes on Jetson). A MultiThreadedExecutor
serves both nodes' callbacks; training and inference run in their own threads.
"""

from __future__ import annotations

import sys
from typing import Any

from rclpy.node import Node

from deal_ros.config import ConfigError
from deal_ros.ros.segmenter_node import SegmenterNode
from deal_ros.ros.trainer_node import TrainerNode, run_nodes


def build_onboard(**node_kwargs: Any) -> list[Node]:
    """Both nodes; the segmenter shares the trainer's model, lock and tags (set either node's `tags`).

    node_kwargs go to both rclpy Node constructors (e.g. parameter_overrides in tests).
    """
    trainer = TrainerNode(**node_kwargs)
    core = trainer.trainer
    try:
        segmenter = SegmenterNode(model=core.model, model_lock=core.model_lock, tag_state=trainer.tag_state,
                                  step_source=lambda: core.step, **node_kwargs)
    except Exception:
        trainer.shutdown()
        trainer.destroy_node()
        raise
    if segmenter.cfg.architecture_hash() != core.cfg.architecture_hash():
        trainer.shutdown()
        raise ConfigError("trainer and segmenter parameters disagree on classes / model architecture; give both "
                          "nodes the same parameter file")
    return [trainer, segmenter]


def main(argv: list[str] | None = None) -> None:
    sys.exit(run_nodes(build_onboard, argv))


if __name__ == "__main__":
    main()
