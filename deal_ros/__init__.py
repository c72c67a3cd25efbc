"""deal_ros: onboard weakly supervised RGB-D segmentation with the Depth Edge Alignment Loss.

The DEAL API is imported lazily, so that `import deal_ros` (e.g. by a ROS node's start-up check) works
and can report a missing or broken torch installation clearly.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["DEAL_PRESETS", "DEALLoss", "__version__", "deal_loss"]


def __getattr__(name: str) -> Any:
    if name in ("DEAL_PRESETS", "DEALLoss", "deal_loss"):
        from deal_ros.losses import deal

        return getattr(deal, name)
    raise AttributeError(f"module 'deal_ros' has no attribute {name!r}")
