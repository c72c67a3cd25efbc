"""The schema: every config section and field of deal_ros, with its default and declaration.

It loads from a plain YAML file or from a ROS 2 parameter file (deal_ros.config.loading), is validated
on construction, and round-trips through ``to_dict`` (checkpoints store it as JSON). A section's
``check_relations`` holds only the rules between fields; what one field allows is in its :func:`setting`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from deal_ros.config.fields import Section, build, check, merge_into, schema_root, setting
from deal_ros.config.loss_sections import LossConfig

IGNORE_INDEX = 255
"""The label id of 'ignore' in pseudo-labels and label images (mono8: ids 0..254 are background + classes)."""


ARCHITECTURE_FIELDS = ("backbone", "output_stride", "padding", "input_norm", "seg_head_channels")
"""ModelConfig fields that a checkpoint must share with the configuration it is loaded into (compared after
:meth:`ModelConfig.resolved`, so 'auto' means what the weights need)."""

BUILTIN_WEIGHTS = "builtin"
"""``model.pretrained_path`` of the package's own ImageNet MobileNetV2 (``deal_ros/models/data``)."""


class WeightsProfile(typing.TypedDict):
    """What a kind of weights needs for ModelConfig's 'auto' fields."""

    input_norm: Literal["tf", "imagenet"]
    padding: Literal["tf_same", "symmetric"]


BUILTIN_PROFILE: WeightsProfile = {"input_norm": "tf", "padding": "tf_same"}
"""What the built-in weights need: TF-trained, so pixel/128 - 1 and TF 'SAME' padding (with symmetric
padding their ImageNet top-1 agreed with TFLite on 11 of 24 photos instead of 24)."""

FILE_PROFILE: WeightsProfile = {"input_norm": "imagenet", "padding": "symmetric"}
"""What torchvision/timm weight files (and random init) get for 'auto': ImageNet mean/std, symmetric padding."""

AUTO_INPUT_SIZE: dict[str, tuple[int, int]] = {"cpu": (128, 160), "cuda": (240, 320)}
"""The network input (H, W) of model.input_height/width 0 (auto) per device type. On a 2-core CPU 240x320 trains
too slowly for live masks (`deal-ros bench live`, README "Live masks over time"); a GPU affords the finer one."""

MIN_INPUT_SIDE = 32
"""The smallest network input side: the stride-16 feature map keeps 2 cells."""


@dataclass
class ModelConfig(Section):
    """The CAM network: backbone + CAM head (K maps) + segmentation head (K + 1 classes)."""

    backbone: Literal["mobilenet_v2", "resnet18", "resnet50"] = setting(
        "mobilenet_v2", "Backbone name from the registry: mobilenet_v2, resnet18, resnet50.")
    output_stride: Literal[8, 16] = setting(16, "Stride of the last feature map (8 or 16, via dilation).")
    pretrained_path: str = setting(
        BUILTIN_WEIGHTS, """ImageNet weights: 'builtin' (the package's MobileNetV2, checksum-verified), a
        torchvision/timm file (path to a .pth/.safetensors state dict, or its file name in the torch hub cache), or
        '' = random init.""")
    freeze_stages: int = setting(
        3, """Number of early backbone stages of pretrained weights kept frozen (3 = up to stride 8: generic edges
        and textures that a few hundred steps on one robot's frames should not re-learn; also a cheaper backward).
        A randomly initialised backbone trains every stage.""", ge=0, le=5)
    freeze_bn: bool = setting(
        True, """Keep pretrained BatchNorm in eval mode, affine frozen (must stay true for the built-in weights:
        their BN is folded). A randomly initialised backbone always trains its BatchNorm.""")
    padding: Literal["auto", "tf_same", "symmetric"] = setting(
        "auto", """MobileNetV2's stride-2 convs: 'tf_same' (TF 'SAME'), 'symmetric' (torchvision), 'auto' = what
        the weights need (tf_same for builtin, symmetric for files and random init).""")
    input_norm: Literal["auto", "tf", "imagenet"] = setting(
        "auto", """Input normalisation: 'tf' (pixel/128 - 1), 'imagenet' (mean/std), 'auto' = what the weights
        need (tf for builtin, imagenet for torchvision/timm files and random init).""")
    input_height: int = setting(
        0, """Network input height in pixels; frames are resized to this for training and inference. 0 (with
        input_width 0) = auto, by the device the network runs on: 128x160 on the CPU, 240x320 on CUDA.""",
        ge=0, le=4096, step=16)
    input_width: int = setting(0, "Network input width in pixels; 0 = auto (see input_height).", ge=0, le=4096,
                               step=16)
    seg_head_channels: int = setting(64, "Channels of the light segmentation head.", ge=8, le=1024)
    seg_head_detach: bool = setting(
        False, """Train the segmentation head on detached backbone features, so its cross-entropy cannot reshape
        the CAM features. Off by default: with the support-plane pseudo-labels the head's loss improves the shared
        features; on when pseudo-labels are poor (no depth plane), where early noisy labels degrade the CAMs.""")

    def check_relations(self) -> None:
        check((self.input_height == 0) == (self.input_width == 0), "model.input_width",
               f"give input_height and input_width together (both 0 = auto, by device), got "
               f"{self.input_height}x{self.input_width}")
        for key in ("input_height", "input_width"):
            check(getattr(self, key) == 0 or getattr(self, key) >= MIN_INPUT_SIDE, f"model.{key}",
                   f"must be 0 (auto) or >= {MIN_INPUT_SIDE}, got {getattr(self, key)}")
        check(self.padding != "tf_same" or self.backbone == "mobilenet_v2", "model.padding",
               f"'tf_same' exists for mobilenet_v2 only, not {self.backbone}")
        if self.pretrained_path == BUILTIN_WEIGHTS and self.backbone == "mobilenet_v2":
            for key, needed in BUILTIN_PROFILE.items():
                value = getattr(self, key)
                check(value in ("auto", needed), f"model.{key}",
                       f"the built-in weights need {needed!r}, got {value!r} (leave it 'auto')")
            check(self.freeze_bn, "model.freeze_bn", "the built-in weights have folded BatchNorm (an identity plus "
                   "bias), which training-mode BatchNorm breaks: it must be true")

    def resolved(self) -> ModelConfig:
        """A copy with 'auto' replaced by what the weights need, freeze_bn and freeze_stages as applied (off for
    random init).

        Pure (no file is read): 'builtin' gets BUILTIN_PROFILE, anything else FILE_PROFILE; a weights file that
        needs other settings (a TF conversion with folded BatchNorm) is refused when loaded, saying which.
        """
        builtin = self.pretrained_path == BUILTIN_WEIGHTS and self.backbone == "mobilenet_v2"
        profile = BUILTIN_PROFILE if builtin else FILE_PROFILE
        return dataclasses.replace(
            self,
            input_norm=profile["input_norm"] if self.input_norm == "auto" else self.input_norm,
            padding=profile["padding"] if self.padding == "auto" else self.padding,
            freeze_bn=self.freeze_bn and bool(self.pretrained_path),
            freeze_stages=self.freeze_stages if self.pretrained_path else 0,
        )

    def for_device(self, device_type: str) -> ModelConfig:
        """A copy with the auto input size (0 x 0) replaced by AUTO_INPUT_SIZE of `device_type` ('cpu', 'cuda')."""
        if self.input_height:
            return self
        height, width = AUTO_INPUT_SIZE.get(device_type, AUTO_INPUT_SIZE["cuda"])
        return dataclasses.replace(self, input_height=height, input_width=width)

    def architecture(self) -> dict[str, Any]:
        """The resolved ARCHITECTURE_FIELDS: what a checkpoint must share with the model it is loaded into."""
        resolved = self.resolved()
        return {k: getattr(resolved, k) for k in ARCHITECTURE_FIELDS}


def _migrate_model_keys(data: Any) -> Any:
    """Configs from before 'model.padding' (checkpoints, YAML files) load meaning what they meant.

    The boolean ``model.tf_same_padding`` became ``model.padding`` ('tf_same' / 'symmetric'); its old
    files also spell out input_norm, so they keep the normalisation and padding they were trained with.
    """
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, dict) or "tf_same_padding" not in model:
        return data
    value = model["tf_same_padding"]
    check(isinstance(value, bool), "model.tf_same_padding", f"expected true/false, got {value!r}")
    check("padding" not in model, "model.tf_same_padding", "replaced by model.padding: give only model.padding")
    migrated = {k: v for k, v in model.items() if k != "tf_same_padding"}
    migrated["padding"] = "tf_same" if value else "symmetric"
    return {**data, "model": migrated}


@dataclass
class DepthConfig(Section):
    """How raw depth becomes metres + validity."""

    min_m: float = setting(0.1, "Depth below this (metres) is treated as a hole.", ge=0)
    max_m: float = setting(10.0, "Depth above this (metres) is treated as a hole.")
    float_unit: Literal["m", "mm"] = setting(
        "m", "Unit of float (32FC1) depth: 'm' as REP 118 says, or 'mm' for drivers that publish millimetres "
             "as float. Depth read as metres with a median of more than 100 m is refused, naming the likely unit.")

    def check_relations(self) -> None:
        check(self.min_m < self.max_m, "depth.min_m", "need 0 <= min_m < max_m")


@dataclass
class PseudoLabelConfig(Section):
    """From CAMs and tags to pixel labels; 255 = ignore."""

    cam_norm: Literal["max", "minmax"] = setting(
        "max", """Per-class CAM normalisation to [0, 1]: 'max' (ReLU / max, the usual WSSS choice) or 'minmax'
        (also removes a constant offset, which a GAP classifier's CAM often carries).""", runtime=True)
    background: Literal["constant", "power"] = setting(
        "constant", "Background score: 'constant' (= bg_score) or 'power' ((1 - max_k)^alpha).", runtime=True)
    bg_score: float = setting(0.35, "Constant background score (background: constant).", gt=0, lt=1, runtime=True)
    alpha: float = setting(4.0, "Exponent of the 'power' background score (1 - max_k)^alpha.", gt=0, runtime=True)
    fg_threshold: float = setting(
        0.6, "A pixel is foreground only if its top class score exceeds this.", ge=0, le=1, runtime=True)
    bg_threshold: float = setting(
        0.25, "A pixel is background only if every tagged class scores below this; between: ignore (255).",
        ge=0, le=1, runtime=True)
    refine: Literal["none", "depth_bilateral"] = setting(
        "depth_bilateral", "Refinement of the class scores before argmax: 'none' or 'depth_bilateral' (RGB + depth "
        "affinity).", runtime=True)
    refine_iterations: int = setting(10, "Iterations of the depth-bilateral refinement.", ge=0, runtime=True)
    refine_sigma_rgb: float = setting(
        0.1, "Colour scale of the refinement affinity (RGB in [0, 1]).", gt=0, runtime=True)
    refine_sigma_depth: float = setting(
        0.02, "Relative depth scale of the refinement affinity (|dz| / z).", gt=0, runtime=True)
    support_plane: bool = setting(
        True, """Background prior from depth: pixels on the dominant plane (the table) or behind it (the floor past
        its edge) are background whatever the CAM says (deal_ros.depth.support_plane), so a class recognised from its
        context cannot become a full-frame label.""", runtime=True)
    support_tolerance: float = setting(
        0.015, "Relative depth residual (|z - z_plane| / z_plane) within which a pixel lies on the support plane.",
        gt=0, lt=0.5, runtime=True)
    slab_height: float = setting(
        0.04, """With support_plane: flat things lying on the plane that reach the frame's edge (a keyboard, a mat,
        paper) and rise less than this above it, relative to their distance (0.04 = 4 cm at 1 m), are background
        too (deal_ros.depth.surfaces); 0 = off.""", ge=0, lt=0.5, runtime=True)
    extra_planes: int = setting(
        4, """With support_plane: up to this many further planes (a shelf's back and side walls, furniture, a floor)
        are background too, fitted one after another to what still stands out; each counts where it holds 5 % of the
        valid pixels and what meets it lies in front of it (a wall, not an object's face, which hides what is behind
        it), or, while more than 40 % of the frame stands out, where it reaches the frame's edge
        (deal_ros.depth.support_plane). Where no support plane is found they give the frame its depth cue.""",
        ge=0, le=16, runtime=True)
    container_walls: bool = setting(
        True, """With support_plane: the walls of a tray or box (what stands out of the plane along the outer rim
        of a region that encloses a floor and holds objects) are background too; an object leaning on a wall keeps
        its body (deal_ros.depth.surfaces).""", runtime=True)
    object_threshold: float = setting(
        0.2, """With support_plane: a pixel standing out of the plane takes its top tagged class when that class
        scores at least this (else ignore); the CAM only has to tell which object it is, not where the object
        ends.""", ge=0, le=1, runtime=True)
    one_class_per_object: bool = setting(
        False, """With support_plane: the object pixels of each part that depth separates (cut at occluding edges)
        take one tagged class, the best by mean score, and each tag first gets a part of its own when there are
        enough parts (deal_ros.labels.objects), instead of a pixel-wise argmax.""", runtime=True)
    part_contrast: bool = setting(
        True, """With support_plane: a depth part takes the tagged class it looks like (colour) in the frames of
        other tag patterns that tag the class and unlike those that do not, one part per class, before the CAM
        decides the rest (deal_ros.labels.part_names): names the objects of a scene that is always seen with the same
        objects from the contrast with other scenes, where the CAM names them by the scene's look.""", runtime=True)
    merge_indistinct: bool = setting(
        False, """Classes tagged in exactly the same frames so far (tags cannot tell them apart: any swap of their
        names fits the data) are labelled as one, the first of them in class order, with a warning naming them
        (deal_ros.labels.class_groups); off, their pixels are split between them at random.""", runtime=True)

    def check_relations(self) -> None:
        check(self.bg_threshold <= self.fg_threshold, "pseudo_label", "need 0 <= bg_threshold <= fg_threshold <= 1")


@dataclass
class BufferConfig(Section):
    """The bounded frame buffer of the online trainer."""

    max_frames: int = setting(
        500, "Most frames the training buffer keeps (oldest of the most frequent class evicted).",
        ge=1, le=1_000_000)
    max_bytes: int = setting(512 * 1024 * 1024, "Most bytes the training buffer keeps.", ge=1024 * 1024)
    class_balanced: bool = setting(True, "Sample frames so that every tagged class is drawn about equally often.")


@dataclass
class AugmentConfig(Section):
    """Joint augmentation of RGB, depth and labels."""

    hflip: bool = setting(True, "Random horizontal flips.", runtime=True)
    scale_min: float = setting(0.75, "Smallest random rescale factor.", ge=0.25, runtime=True)
    scale_max: float = setting(1.25, "Largest random rescale factor.", le=4.0, runtime=True)
    color_jitter: float = setting(
        0.1, "Brightness/contrast jitter amplitude (0 = off); RGB only.", ge=0, le=0.99, runtime=True)

    def check_relations(self) -> None:
        check(self.scale_min <= self.scale_max, "augment.scale_min/scale_max",
               "need 0.25 <= scale_min <= scale_max <= 4")


@dataclass
class TrainConfig(Section):
    """Optimisation of the online / offline trainer."""

    device: str = setting("auto", "'auto' (CUDA when present, else CPU with a warning), 'cpu', 'cuda' or 'cuda:N'.")
    batch_size: int = setting(
        8, "Frames per training step (halved automatically on CUDA out-of-memory).", ge=1, le=256)
    optimizer: Literal["adamw", "sgd"] = setting("adamw", "Optimiser.")
    # above 10 no optimiser converges, and Adam's bias-corrected step overflows float32 near 1e37
    lr: float = setting(
        2e-3, "Learning rate of the heads; the backbone uses lr * backbone_lr_scale.", gt=0, le=10, runtime=True)
    backbone_lr_scale: float = setting(0.1, "The backbone learns at lr times this.", ge=0, le=10, runtime=True)
    weight_decay: float = setting(1e-4, "Weight decay of the optimiser.", ge=0)
    momentum: float = setting(0.9, "SGD only.")
    grad_clip: float = setting(5.0, "Max gradient norm (0 = off).", ge=0, le=1000, runtime=True)
    amp: bool = setting(True, "Mixed precision on CUDA (ignored on CPU).")
    seed: int = setting(0, "Random seed of sampling, augmentation and initial weights.")
    max_steps_per_second: float = setting(
        0.0, "Cap on the training rate of the online trainer (0 = no cap).", ge=0, le=1000, runtime=True)
    new_frames_per_step: int = setting(
        16, """Offline (`deal-ros train`): step n may sample the bag's first batch_size + n * this frames, and
        waits until they are read (0 = read the whole bag first), so the same seed gives the same weights
        however fast the bag is read. Online, frames come when the camera sends them.""", ge=0, le=1_000_000)

    def check_relations(self) -> None:
        check(self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
               "train.device", f"must be auto, cpu, cuda or cuda:N, got {self.device!r}")


@dataclass
class CheckpointConfig(Section):
    """Where and how often the trainer writes its checkpoint."""

    directory: str = setting(
        "deal_ros_model", "Where checkpoints go; the latest is `<directory>/model.safetensors`.")
    period_steps: int = setting(
        200, "Write a checkpoint every N training steps (0 = only on request).", ge=0, le=10_000_000, runtime=True)


@dataclass
class SyncConfig(Section):
    """How colour and depth are paired (message_filters ApproximateTimeSynchronizer): the nodes pair the camera's
    topics and `deal-ros train` / `label` pair a bag's with these same numbers (deal_ros.io.sync)."""

    queue_size: int = setting(10, "ApproximateTimeSynchronizer queue size per input.", ge=1, le=1000)
    slop: float = setting(0.05, "Max stamp difference (s) of an RGB/depth pair.", ge=0, le=5)
    stale_timeout_s: float = setting(
        5.0, "Warn when no synchronised pair arrived for this long (s) while inputs are published.", ge=0.5,
        le=3600, runtime=True)


@dataclass
class KeyframeConfig(Section):
    """Which synchronised frames enter the training buffer (deal_ros.online.keyframes.KeyframeGate): the trainer
    node's gate, and `deal-ros train`'s when a --config or --set names these keys (else it takes every frame)."""

    min_interval_s: float = setting(
        0.5, "A frame enters the training buffer at most this often (s).", ge=0, le=3600, runtime=True)
    max_interval_s: float = setting(
        5.0, "Take a frame after this long (s) even without motion (0 = only on motion).", ge=0, le=3600,
        runtime=True)
    motion_threshold: float = setting(
        0.04, "Mean absolute grey difference (0..1) of 32x24 thumbnails that counts as new view.", ge=0, le=1,
        runtime=True)


@dataclass
class TrustConfig(Section):
    """When the segmentation head's masks count as trustworthy (deal_ros.training.trust): the trainer node's status
    field masks_trusted, the segmenter's mask.until_trusted, and `deal-ros train`'s note of the step."""

    min_agreement: float = setting(
        0.52, """Masks become trusted when the segmentation head's agreement with the pseudo-labels of its training
        batches (mIoU of its argmax against them, on the pixels with a confident label), averaged over the last
        window_steps steps, stays at or above this for hold_steps steps. 0.52 ~ held-out mask mIoU 0.6 on the
        built-in close-up scenes (held-out mIoU = 1.10 x agreement + 0.03 measured, r 0.985).""", ge=0, le=1,
        runtime=True)
    release_margin: float = setting(
        0.1, """Hysteresis: trusted masks become untrusted again only when that average falls below
        min_agreement minus this.""", ge=0, le=1, runtime=True)
    window_steps: int = setting(
        20, "Steps with pseudo-labels averaged for the agreement (fewer measured steps: not trusted yet).",
        ge=1, le=100_000, runtime=True)
    hold_steps: int = setting(
        10, "Steps in a row the averaged agreement must stay at or above min_agreement before masks are trusted.",
        ge=1, le=100_000, runtime=True)


@schema_root
@dataclass
class DealRosConfig(Section):
    """Everything deal_ros needs; `classes` are the foreground class names (background is implicit)."""

    classes: list[str] = setting(
        ["mug", "box", "ball"], """Foreground class names the model learns (background is implicit, id 0); fixed
        for a checkpoint. The default is the README's example set (tags mug, box, ball): list your own objects.""")
    model: ModelConfig = field(default_factory=ModelConfig)
    depth: DepthConfig = field(default_factory=DepthConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    pseudo_label: PseudoLabelConfig = field(default_factory=PseudoLabelConfig)
    buffer: BufferConfig = field(default_factory=BufferConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)
    keyframe: KeyframeConfig = field(default_factory=KeyframeConfig)
    trust: TrustConfig = field(default_factory=TrustConfig)

    def __post_init__(self) -> None:
        self.validate()

    def check_relations(self) -> None:
        check(len(self.classes) >= 1, "classes", "need at least one foreground class")
        check(len(self.classes) < IGNORE_INDEX, "classes",
               f"at most {IGNORE_INDEX - 1} classes fit in a mono8 mask with {IGNORE_INDEX} = ignore")
        check(all(isinstance(c, str) and c.strip() == c and c for c in self.classes), "classes",
               "class names must be non-empty strings without surrounding spaces")
        check(len(set(self.classes)) == len(self.classes), "classes", "class names must be unique")
        check("background" not in self.classes, "classes", "'background' is implicit (id 0); do not list it")

    @property
    def num_classes(self) -> int:
        """K, the number of foreground classes (the segmentation head has K + 1 outputs)."""
        return len(self.classes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def for_device(self, device_type: str) -> DealRosConfig:
        """A copy whose network input size is the one it runs at on `device_type` (the auto size resolved)."""
        model = self.model.for_device(device_type)
        return self if model is self.model else dataclasses.replace(self, model=model)

    def architecture_hash(self) -> str:
        """Short hash of what fixes the network's function: classes and ARCHITECTURE_FIELDS of the model."""
        key = json.dumps({"classes": self.classes, "model": self.model.architecture()}, sort_keys=True)
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DealRosConfig:
        return build(cls, _migrate_model_keys(data), "")

    def updated(self, overrides: dict[str, Any]) -> DealRosConfig:
        """A copy with dotted-key overrides applied, e.g. {'loss.deal.weight': 0.5}.

        A mapping given for a section ({'train': {'lr': 0.01}}) is merged into it, key by key, so it
        never silently resets the section's other keys (or earlier overrides) to their defaults.
        """
        data = self.to_dict()
        for dotted, value in overrides.items():
            node = data
            *parents, leaf = dotted.split(".")
            for part in parents:
                check(isinstance(node.get(part), dict), dotted, "unknown key")
                node = node[part]
            check(leaf in node, dotted, "unknown key")
            if isinstance(node[leaf], dict) and isinstance(value, dict):
                merge_into(node[leaf], value, dotted)
            else:
                node[leaf] = value
        return DealRosConfig.from_dict(data)
