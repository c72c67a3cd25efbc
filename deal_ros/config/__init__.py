"""One configuration schema for the core, the command-line tool and the ROS nodes.

Rooms: ``fields`` (how a field is declared, validated and coerced), ``schema`` (the sections and their
fields; the ``loss.*`` sections in ``loss_sections``), ``loading`` (plain YAML and ROS 2 parameter files),
``strict_yaml`` (the one YAML reader).
The names below are the ones the rest of the package uses.
"""

from deal_ros.config.fields import (
    SETTING,
    Bounds,
    ConfigError,
    ConfigKey,
    Section,
    Setting,
    choices_of,
    coerce,
    config_keys,
    setting,
)
from deal_ros.config.loading import load_config
from deal_ros.config.loss_sections import (
    BoundaryConfig,
    DealLossConfig,
    EdgeNorm,
    EdgeOperator,
    FSLConfig,
    GridStride,
    HoleFill,
    ISLConfig,
    LossConfig,
    ReconstructionConfig,
    SmoothnessConfig,
    SSCConfig,
)
from deal_ros.config.schema import (
    ARCHITECTURE_FIELDS,
    BUILTIN_PROFILE,
    BUILTIN_WEIGHTS,
    FILE_PROFILE,
    IGNORE_INDEX,
    AugmentConfig,
    BufferConfig,
    CheckpointConfig,
    DealRosConfig,
    DepthConfig,
    KeyframeConfig,
    ModelConfig,
    PseudoLabelConfig,
    SyncConfig,
    TrainConfig,
    TrustConfig,
    WeightsProfile,
)

__all__ = [
    "ARCHITECTURE_FIELDS", "BUILTIN_PROFILE", "BUILTIN_WEIGHTS", "FILE_PROFILE", "IGNORE_INDEX", "SETTING",
    "AugmentConfig", "BoundaryConfig", "Bounds", "BufferConfig", "CheckpointConfig", "ConfigError", "ConfigKey",
    "DealLossConfig", "DealRosConfig", "DepthConfig", "EdgeNorm", "EdgeOperator", "FSLConfig", "GridStride",
    "HoleFill", "ISLConfig", "KeyframeConfig", "LossConfig", "ModelConfig", "PseudoLabelConfig", "ReconstructionConfig",
    "SSCConfig",
    "Section", "Setting", "SmoothnessConfig", "SyncConfig", "TrainConfig", "TrustConfig", "WeightsProfile",
    "choices_of", "coerce", "config_keys", "load_config", "setting",
]
