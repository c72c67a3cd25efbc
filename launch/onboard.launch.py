"""Trainer + segmenter on the robot: `ros2 launch deal_ros onboard.launch.py rgb_topic:=... tags:=mug,box`.

separate_processes:=false (default) runs both nodes in one `onboard` process (the segmenter's copy of
the network gets the trainer's weights in memory); true runs `trainer_node` and `segmenter_node` apart,
exchanging weights through the checkpoint file. Every node parameter is in the config file, whose values
are the declared defaults; an argument left '' keeps the file's value, so no default is written twice.
"""

from __future__ import annotations

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription

PARAMETER_ARGUMENTS = {
    "rgb_topic": "rgb_topic",
    "depth_topic": "depth_topic",
    "camera_info_topic": "camera_info_topic",
    "tags_topic": "tags_topic",
    "tags": "tags",
    "device": "train.device",
}
"""Launch argument -> node parameter it overrides when not ''."""

ARGUMENTS = {
    "rgb_topic": ("", "Colour image topic; '' = the config's (/camera/color/image_raw)."),
    "depth_topic": ("", "Depth topic aligned to colour (16UC1 mm / 32FC1 m); '' = the config's."),
    "camera_info_topic": ("", "CameraInfo of the colour camera (semantic point cloud); '' = the config's."),
    "tags_topic": ("", "std_msgs/String topic of comma-separated tags; '' = the config's (/deal/tags)."),
    "tags": ("", "Objects in view at start, comma-separated (e.g. mug,box); '' = not known yet."),
    "config": ("", "Parameter file; '' = the package's config/onboard.yaml."),
    "model_dir": ("~/.ros/deal_ros_model", "Checkpoint directory (checkpoint.directory); '' = the config's."),
    "device": ("", "train.device: auto, cpu, cuda, cuda:N; '' = the config's."),
    "use_sim_time": ("false", "Use /clock (true when replaying a bag with --clock)."),
    "separate_processes": ("false", "true: trainer and segmenter as two processes sharing weights via the checkpoint."),
    "namespace": ("", "Namespace of the nodes and their output topics."),
    "log_level": ("info", "Log level of the nodes."),
}


def _truthy(text: str) -> bool:
    return text.strip().lower() in ("1", "true", "yes", "on")


def _nodes(context, *args, **kwargs):
    value = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    config = value["config"] or os.path.join(get_package_share_directory("deal_ros"), "config", "onboard.yaml")
    overrides = {param: value[arg] for arg, param in PARAMETER_ARGUMENTS.items() if value[arg]}
    overrides["use_sim_time"] = _truthy(value["use_sim_time"])
    if value["model_dir"]:
        overrides["checkpoint.directory"] = os.path.expanduser(value["model_dir"])
    common = {
        "package": "deal_ros",
        "namespace": value["namespace"],
        "parameters": [config, overrides],
        "output": "screen",
        "emulate_tty": True,
        "arguments": ["--ros-args", "--log-level", value["log_level"]],
    }
    if _truthy(value["separate_processes"]):
        return [Node(executable="trainer_node", name="deal_trainer", **common),
                Node(executable="segmenter_node", name="deal_segmenter", **common)]
    # no name=: it would rename both nodes of the process (they stay deal_trainer and deal_segmenter)
    return [Node(executable="onboard", **common)]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        *(DeclareLaunchArgument(name, default_value=default, description=text)
          for name, (default, text) in ARGUMENTS.items()),
        OpaqueFunction(function=_nodes),
    ])
