"""Train from a recorded bag through the same nodes: `ros2 launch deal_ros replay.launch.py bag:=my_bag tags:=mug`.

Includes onboard.launch.py (every argument of it works here: rgb_topic, tags, device, namespace, ...)
with use_sim_time, and plays the bag with `ros2 bag play --clock` once the nodes had time to start.
"""

from __future__ import annotations

from launch.actions import DeclareLaunchArgument, ExecuteProcess, IncludeLaunchDescription, TimerAction
from launch.conditions import IfCondition, UnlessCondition
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription


def generate_launch_description() -> LaunchDescription:
    onboard = PathJoinSubstitution([FindPackageShare("deal_ros"), "launch", "onboard.launch.py"])
    play = ["ros2", "bag", "play", LaunchConfiguration("bag"), "--clock", "--rate", LaunchConfiguration("rate")]
    loop = LaunchConfiguration("loop")
    return LaunchDescription([
        DeclareLaunchArgument("bag", description="rosbag2 folder or file to play (sqlite3 or mcap)."),
        DeclareLaunchArgument("rate", default_value="1.0", description="Playback rate."),
        DeclareLaunchArgument("loop", default_value="false", description="Play the bag in a loop."),
        DeclareLaunchArgument("start_delay_s", default_value="10.0",
                              description="Seconds to wait for the nodes (model build) before playing."),
        # onboard's own arguments reach it from this launch's command line; only sim time is fixed here
        IncludeLaunchDescription(PythonLaunchDescriptionSource(onboard),
                                 launch_arguments={"use_sim_time": "true"}.items()),
        TimerAction(period=LaunchConfiguration("start_delay_s"), actions=[
            ExecuteProcess(cmd=[*play, "--loop"], output="screen", condition=IfCondition(loop)),
            ExecuteProcess(cmd=play, output="screen", condition=UnlessCondition(loop)),
        ]),
    ])
