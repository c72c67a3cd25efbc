"""Trainer + segmenter on the robot: `ros2 launch deal_ros onboard.launch.py rgb_topic:=... tags:=mug,box`.

separate_processes:=false (default) runs both nodes in one `onboard` process (the segmenter's copy of
the network gets the trainer's weights in memory); true runs `trainer_node` and `segmenter_node` apart,
exchanging weights through the checkpoint file.

The nodes subscribe relative names (rgb/image, depth/image, rgb/camera_info, tags); the *_topic
arguments remap them, and relative targets follow `namespace`, like the outputs (deal/...). Every
node parameter comes from the config file (its values are the declared defaults); `tags`, `device`
and `model_dir` override it only when given, so no default is written twice. QoS: the standard
`qos_overrides.<topic>.subscription.*` parameters, in the config file.
"""

from __future__ import annotations

from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition, UnlessCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution, PythonExpression
from launch_ros.actions import Node, SetParameter, SetParametersFromFile
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription

ARGUMENTS = (
    ("rgb_topic", "camera/color/image_raw", "Colour image topic (remaps rgb/image)."),
    ("depth_topic", "camera/aligned_depth_to_color/image_raw",
     "Depth topic aligned to colour, 16UC1 mm / 32FC1 m (remaps depth/image)."),
    ("camera_info_topic", "camera/color/camera_info", "CameraInfo of the colour camera (remaps rgb/camera_info)."),
    ("tags_topic", "deal/tags", "std_msgs/String of comma-separated tags (remaps tags)."),
    ("tags", "", "Objects in view at start, comma-separated (e.g. mug,box); '' = the config's (not known yet)."),
    ("config", PathJoinSubstitution([FindPackageShare("deal_ros"), "config", "onboard.yaml"]), "Parameter file."),
    ("model_dir", "~/.ros/deal_ros_model", "Checkpoint directory (checkpoint.directory); '' = the config's."),
    ("device", "", "train.device: auto, cpu, cuda, cuda:N; '' = the config's."),
    ("use_sim_time", "false", "Use /clock (true when replaying a bag with --clock)."),
    ("separate_processes", "false", "true: trainer and segmenter as two processes sharing weights via the checkpoint."),
    ("namespace", "", "Namespace of the nodes, their inputs (relative topics) and outputs."),
    ("log_level", "info", "Log level of the nodes."),
)

REMAPPINGS = [("rgb/image", LaunchConfiguration("rgb_topic")), ("depth/image", LaunchConfiguration("depth_topic")),
              ("rgb/camera_info", LaunchConfiguration("camera_info_topic")),
              ("tags", LaunchConfiguration("tags_topic"))]


def _given(name: str) -> IfCondition:
    """True when launch argument `name` is not ''."""
    return IfCondition(PythonExpression(["'", LaunchConfiguration(name), "' != ''"]))


def _node(executable: str, name: str | None, condition: IfCondition | UnlessCondition) -> Node:
    # no name for `onboard`: it would rename both nodes of the process (they stay deal_trainer and deal_segmenter)
    return Node(package="deal_ros", executable=executable, name=name, namespace=LaunchConfiguration("namespace"),
                remappings=REMAPPINGS, output="screen", emulate_tty=True, condition=condition,
                arguments=["--ros-args", "--log-level", LaunchConfiguration("log_level")])


def generate_launch_description() -> LaunchDescription:
    separate = LaunchConfiguration("separate_processes")
    return LaunchDescription([
        *(DeclareLaunchArgument(name, default_value=default, description=text) for name, default, text in ARGUMENTS),
        # the file first, then what was given: later parameters win
        SetParametersFromFile(LaunchConfiguration("config")),
        SetParameter("use_sim_time", LaunchConfiguration("use_sim_time")),
        SetParameter("tags", LaunchConfiguration("tags"), condition=_given("tags")),
        SetParameter("train.device", LaunchConfiguration("device"), condition=_given("device")),
        SetParameter("checkpoint.directory", LaunchConfiguration("model_dir"), condition=_given("model_dir")),
        _node("onboard", None, UnlessCondition(separate)),
        _node("trainer_node", "deal_trainer", IfCondition(separate)),
        _node("segmenter_node", "deal_segmenter", IfCondition(separate)),
    ])
