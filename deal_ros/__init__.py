"""deal_ros: onboard weakly supervised RGB-D segmentation with the Depth Edge Alignment Loss."""

from deal_ros.losses.deal import DEAL_PRESETS, DEALLoss, deal_loss

__version__ = "0.1.0"
__all__ = ["DEAL_PRESETS", "DEALLoss", "__version__", "deal_loss"]
