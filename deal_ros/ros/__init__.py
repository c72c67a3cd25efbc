"""ROS 2 layer: the rclpy nodes, thin on purpose, over the rclpy-free logic of ``deal_ros.online``.

Only modules of this package import rclpy: ``trainer_node``, ``segmenter_node``, ``onboard`` (both in
one process) and ``_rclpy_util`` (the parameter, QoS and message helpers they share).
"""
