"""deal_ros: onboard weakly supervised RGB-D segmentation with the Depth Edge Alignment Loss."""

__version__ = "0.1.0"
