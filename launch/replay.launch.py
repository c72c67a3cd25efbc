"""Train from a recorded bag through the same nodes: `ros2 launch deal_ros replay.launch.py bag:=my_bag tags:=mug`.

Plays the bag with `ros2 bag play --clock` (the nodes use /clock: use_sim_time) after the nodes
had time to start, and passes every other argument on to onboard.launch.py.
"""

from __future__ import annotations

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, ExecuteProcess, IncludeLaunchDescription, TimerAction
from launch.conditions import IfCondition, UnlessCondition
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration

from launch import LaunchDescription

PASSED_ON = ("rgb_topic", "depth_topic", "camera_info_topic", "tags_topic", "tags", "config", "model_dir", "device",
             "separate_processes", "namespace", "log_level")


def generate_launch_description() -> LaunchDescription:
    onboard = os.path.join(get_package_share_directory("deal_ros"), "launch", "onboard.launch.py")
    bag = LaunchConfiguration("bag")
    play = ["ros2", "bag", "play", bag, "--clock", "--rate", LaunchConfiguration("rate")]
    return LaunchDescription([
        DeclareLaunchArgument("bag", description="rosbag2 folder or file to play (sqlite3 or mcap)."),
        DeclareLaunchArgument("rate", default_value="1.0", description="Playback rate."),
        DeclareLaunchArgument("loop", default_value="false", description="Play the bag in a loop."),
        DeclareLaunchArgument("start_delay_s", default_value="5.0",
                              description="Seconds to wait for the nodes (model build) before playing."),
        *(DeclareLaunchArgument(name, default_value=default, description="passed on to onboard.launch.py")
          for name, default in (
            ("rgb_topic", ""), ("depth_topic", ""), ("camera_info_topic", ""), ("tags_topic", ""), ("tags", ""),
            ("config", ""), ("model_dir", "~/.ros/deal_ros_model"), ("device", ""), ("separate_processes", "false"),
            ("namespace", ""), ("log_level", "info"))),
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(onboard),
            launch_arguments={"use_sim_time": "true",
                              **{name: LaunchConfiguration(name) for name in PASSED_ON}}.items(),
        ),
        TimerAction(period=LaunchConfiguration("start_delay_s"), actions=[
            ExecuteProcess(cmd=[*play, "--loop"], output="screen", condition=IfCondition(LaunchConfiguration("loop"))),
            ExecuteProcess(cmd=play, output="screen", condition=UnlessCondition(LaunchConfiguration("loop"))),
        ]),
    ])
