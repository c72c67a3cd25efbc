"""The online path without rclpy, shared by the ROS nodes and `deal-ros train`.

What a node decides about a frame lives here, so the offline path runs the very same logic and CI
tests it without ROS: tags (parsing, schedules, a node's current tags), RGB-D pair checks, keyframe
selection, the latest-frame slot, the training loop, hot reload, parameters, status and diagnostics,
output message fields and the start-up checks. Nothing here imports rclpy; ``deal_ros.ros`` holds
the rclpy nodes.
"""
