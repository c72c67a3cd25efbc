"""ROS 2 layer: thin rclpy nodes over rclpy-free logic.

Everything a node decides (parameters, tags, keyframes, sync health, message fields, point clouds,
hot reload, status) lives in modules of this package that do not import rclpy, so CI tests them
without ROS. Only ``trainer_node``, ``segmenter_node``, ``onboard`` and ``_rclpy_util`` import rclpy.
"""
