"""Trainer and segmenter in one process (the default on the robot): no checkpoint round trip.

The segmenter runs its own copy of the network on the trainer's device and swaps in the trainer's
weight snapshot after every `weights_sync_steps` steps (deal_ros.compute.live): inference never waits for a
training step, which takes seconds on a CPU. The copy costs one model's weights in memory (~15 MB for
MobileNetV2), not activations. On the CPU a training step stands aside, layer by layer, while a frame
is segmented (`inference_priority`); on CUDA the segmenter has its own stream. A MultiThreadedExecutor
serves both nodes' callbacks; training and inference run in their own threads.
"""

from __future__ import annotations

from typing import Any

from deal_ros.config import ConfigError
from deal_ros.ros.rgbd_node import RGBDNode
from deal_ros.ros.segmenter_node import SegmenterNode
from deal_ros.ros.trainer_node import TrainerNode


def build_onboard(**node_kwargs: Any) -> list[RGBDNode]:
    """Both nodes; the segmenter gets the trainer's weights, step control and tags (set either node's `tags`).

    node_kwargs go to both rclpy Node constructors (e.g. parameter_overrides in tests).
    """
    trainer = TrainerNode(**node_kwargs)
    core = trainer.trainer
    try:
        segmenter = SegmenterNode(weights=trainer.share_weights(), control=core.control, device=core.device,
                                  tag_state=trainer.tag_state, **node_kwargs)
    except BaseException:  # Ctrl-C while the segmenter builds too: the trainer saves what it trained
        trainer.shutdown()
        trainer.destroy_node()
        raise
    segmenter.segmenter.part_bank = core.part_bank  # pseudo_label.part_contrast: the parts the trainer has seen
    if segmenter.cfg.architecture_hash() != core.cfg.architecture_hash():
        segmenter.shutdown()
        segmenter.destroy_node()
        trainer.shutdown()
        trainer.destroy_node()
        raise ConfigError("trainer and segmenter parameters disagree on classes / model architecture; give both "
                          "nodes the same parameter file")
    return [trainer, segmenter]

