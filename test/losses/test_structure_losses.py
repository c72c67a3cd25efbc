"""Structure losses of method.md §3 (ISL, FSL, boundary-guided smoothness, boundary branch, SSC a + b).

Per loss: finite on degenerate input, exactly zero gradient to untagged classes (ISL excepted: it is a
classification loss and pushes them down), the right sign on a constructed good vs bad CAM; FSL's local
form equals the dense form and its memory grows as h * w * window, not (h w)^2. Device-agnostic.
"""

from __future__ import annotations

import math

import pytest
import torch

from deal_ros.config import ConfigError, DealRosConfig
from deal_ros.losses import (
    BoundaryLoss,
    FSLLoss,
    ISLLoss,
    ReconstructionLoss,
    SmoothnessLoss,
    SSCLoss,
    boundary_targets,
    feature_similarity_loss,
    feature_similarity_loss_dense,
    label_boundaries,
    smoothness_loss,
)
from deal_ros.losses.boundary import balanced_bce
from deal_ros.losses.fsl import window_offsets
from deal_ros.losses.memory import peak_tensor_bytes
from deal_ros.losses.ssc import erode, self_modulation_loss, superpixel_mean

H, W = 64, 64  # input size; the CAM grid is stride 8 (8 x 8), loss grids stride 4 (16 x 16)


pytestmark = pytest.mark.usefixtures("one_thread")


class TinyBackbone(torch.nn.Module):
    """Three-level feature backbone (strides 4, 8, 8) standing in for the CAM network's."""

    out_channels = (4, 6, 8)

    def __init__(self) -> None:
        super().__init__()
        self.c1 = torch.nn.Conv2d(3, 4, 3, stride=4, padding=1)
        self.c2 = torch.nn.Conv2d(4, 6, 3, stride=2, padding=1)
        self.c3 = torch.nn.Conv2d(6, 8, 3, padding=1)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        a = torch.relu(self.c1(x))
        b = torch.relu(self.c2(a))
        return [a, b, torch.relu(self.c3(b))]


def box_scene(device: str, shift: int = 0) -> dict:
    """A red box on a grey table with a 10 cm depth step; returns rgb [0, 1], depth, labels, an aligned CAM."""
    torch.manual_seed(0)
    rgb = torch.full((1, 3, H, W), 0.5)
    rgb[:, 0, 16:48, 16:48], rgb[:, 1:, 16:48, 16:48] = 0.9, 0.1
    depth = torch.full((1, 1, H, W), 0.8)
    depth[..., 16:48, 16:48] = 0.7
    labels = torch.zeros(1, H // 4, W // 4, dtype=torch.long)
    labels[:, 4:12, 4:12] = 1
    mask = torch.zeros(1, 1, H, W)
    mask[..., 16:48, 16 + shift:48 + shift] = 1.0
    cam = torch.cat([4.0 * mask - 2.0, torch.full_like(mask, -1.0)], dim=1)  # class 0 tagged, class 1 not
    return {"rgb": rgb.to(device), "depth": depth.to(device), "labels": labels.to(device), "cam": cam.to(device),
            "tags": torch.tensor([[1.0, 0.0]], device=device)}


def features_for(rgb: torch.Tensor, backbone: torch.nn.Module) -> list[torch.Tensor]:
    return backbone.to(rgb.device).forward_features(rgb * 2 - 1)


def make(name: str, device: str) -> tuple[torch.nn.Module, dict]:
    """A loss by name and the context it needs."""
    backbone = TinyBackbone().to(device)
    if name == "isl":
        return ISLLoss(), {}
    if name == "fsl":
        return FSLLoss(radius=4), {}
    if name.startswith("smooth_"):
        return SmoothnessLoss(source=name.split("_", 1)[1].replace("pl", "pseudo_label")), {}
    if name == "boundary":
        return BoundaryLoss(backbone.out_channels, depth_edges=True).to(device), {"backbone": backbone}
    if name == "ssc":
        return SSCLoss(start_step=0, n_segments=16), {}
    if name == "recon":
        return ReconstructionLoss(2, 8, backbone, lambda x: x / 128.0 - 1.0, hidden_channels=8).to(device), {}
    raise KeyError(name)


NAMES = ["isl", "fsl", "smooth_depth", "smooth_pl", "smooth_learned", "boundary", "ssc", "recon"]
STRUCTURE = [n for n in NAMES if n != "isl"]


def call(loss: torch.nn.Module, cam: torch.Tensor, depth: torch.Tensor, tags: torch.Tensor, scene: dict,
         extra: dict) -> torch.Tensor:
    backbone = extra.get("backbone") or TinyBackbone().to(cam.device)
    context = {"rgb": scene["rgb"].expand(cam.shape[0], -1, -1, -1), "step": 100,
               "pseudo_labels": scene["labels"].expand(cam.shape[0], -1, -1),
               "boundary": label_boundaries(scene["labels"]).expand(cam.shape[0], -1, -1, -1),
               "features": features_for(scene["rgb"].expand(cam.shape[0], -1, -1, -1), backbone)}
    return loss(cam, depth, tags, **context)


@pytest.mark.parametrize("name", NAMES)
def test_finite_on_degenerate_input(name: str, device: str) -> None:
    scene = box_scene(device)
    loss, extra = make(name, device)
    cams = {"constant": torch.full((2, 2, 8, 8), 0.3, device=device), "zero": torch.zeros(2, 2, 8, 8, device=device),
            "scene": scene["cam"].expand(2, -1, -1, -1)}
    depths = {"constant": torch.full((2, 1, H, W), 1.5, device=device), "zero": torch.zeros(2, 1, H, W, device=device),
              "nan": torch.full((2, 1, H, W), float("nan"), device=device),
              "holes": scene["depth"].expand(2, -1, -1, -1).clone()}
    depths["holes"][..., ::3, ::5] = 0.0
    tag_sets = {"one": torch.tensor([[1.0, 0.0], [0.0, 1.0]], device=device),
                "none": torch.zeros(2, 2, device=device)}
    for cam_name, cam in cams.items():
        for depth_name, depth in depths.items():
            for tags_name, tags in tag_sets.items():
                cam_p = cam.clone().requires_grad_(True)
                value = call(loss, cam_p, depth, tags, scene, extra)
                value.backward()
                value = value.detach()
                where = f"{name}: cam {cam_name}, depth {depth_name}, tags {tags_name}"
                assert value.ndim == 0 and torch.isfinite(value), where
                assert torch.isfinite(cam_p.grad).all(), where
                if tags_name == "none" and name in STRUCTURE:
                    assert bool((cam_p.grad == 0).all()), where
                    # The boundary branch and the decoder still learn from untagged frames (all background).
                    assert name in ("boundary", "recon") or float(value) == 0.0, where


@pytest.mark.parametrize("name", STRUCTURE)
def test_untagged_classes_get_exactly_zero_gradient(name: str, device: str) -> None:
    scene = box_scene(device)
    loss, extra = make(name, device)
    cam = (scene["cam"] + 0.3 * torch.randn_like(scene["cam"])).requires_grad_(True)
    call(loss, cam, scene["depth"], scene["tags"], scene, extra).backward()
    assert bool((cam.grad[:, 1] == 0).all()), "untagged class received a gradient"
    if name != "boundary":  # the boundary BCE does not depend on the CAM at all
        assert float(cam.grad[:, 0].abs().sum()) > 0, "the tagged class got no gradient"


def test_isl_is_a_classification_loss() -> None:
    """High logits on the tagged class and low on the untagged one score better; untagged logits are pushed down."""
    tags = torch.tensor([[1.0, 0.0]])
    good = torch.cat([torch.full((1, 1, 8, 8), 3.0), torch.full((1, 1, 8, 8), -3.0)], dim=1)
    torch.manual_seed(0)
    assert float(ISLLoss()(good, None, tags)) < float(ISLLoss()(-good, None, tags))
    cam = torch.zeros(1, 2, 8, 8, requires_grad=True)
    ISLLoss(num_samples=50)(cam, None, tags).backward()
    assert float(cam.grad[:, 1].sum()) > 0 > float(cam.grad[:, 0].sum()), "descent raises tagged, lowers untagged"
    assert int((cam.grad[:, 0] != 0).sum()) <= 50, "only sampled pixels carry gradient"


def test_fsl_prefers_a_cam_aligned_with_the_colour_region(device: str) -> None:
    aligned, shifted = box_scene(device), box_scene(device, shift=8)
    noisy = aligned["cam"] + 2.0 * torch.randn_like(aligned["cam"])
    loss = FSLLoss(radius=6)
    cams = (aligned["cam"], shifted["cam"], noisy)
    values = [float(loss(c, None, aligned["tags"], rgb=aligned["rgb"])) for c in cams]
    assert values[0] < values[1] and values[0] < values[2], values


def test_fsl_local_form_equals_the_dense_form() -> None:
    torch.manual_seed(1)
    cam, rgb = torch.randn(2, 3, 7, 9), torch.rand(2, 3, 28, 36)
    tags = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    full = feature_similarity_loss(cam, rgb, tags, radius=12)  # radius beyond the diagonal: all pairs
    assert torch.allclose(full, feature_similarity_loss_dense(cam, rgb, tags), rtol=1e-4, atol=1e-7)
    local = feature_similarity_loss(cam, rgb, tags, radius=3)
    assert torch.allclose(local, feature_similarity_loss_dense(cam, rgb, tags, radius=3), rtol=1e-4, atol=1e-7)


def test_fsl_memory_is_linear_in_pixels_and_window() -> None:
    """Peak bytes (op outputs + what autograd keeps) grow ~4x per 2x side for the local form, ~16x for the dense."""
    radius, k, batch = 3, 2, 1
    peaks, dense = [], []
    for h, w in ((8, 10), (16, 20)):
        cam = torch.randn(batch, k, h, w, requires_grad=True)
        rgb, tags = torch.rand(batch, 3, 4 * h, 4 * w), torch.ones(batch, k)
        peaks.append(peak_tensor_bytes(lambda cam=cam, rgb=rgb, tags=tags: feature_similarity_loss(
            cam, rgb, tags, radius=radius)))
        dense.append(peak_tensor_bytes(lambda cam=cam, rgb=rgb, tags=tags: feature_similarity_loss_dense(
            cam, rgb, tags, radius=radius)))
        bound = 16 * batch * (k + 1) * h * w * len(window_offsets(radius)) * 4  # 16 cell-sized floats per offset
        assert 0 < peaks[-1] <= bound, (peaks[-1], bound)
    assert peaks[1] / peaks[0] < 5.0, peaks
    assert dense[1] / dense[0] > 12.0, dense


def test_smoothness_prefers_a_cam_whose_edges_sit_on_the_boundary(device: str) -> None:
    aligned, shifted = box_scene(device), box_scene(device, shift=8)
    noisy = aligned["cam"] + torch.randn_like(aligned["cam"])
    for source, guide in (("depth", "edge"), ("depth", "gradient"), ("pseudo_label", "gradient"),
                          ("pseudo_label", "edge")):
        loss = SmoothnessLoss(source=source, guide=guide)
        values = [float(loss(c, aligned["depth"], aligned["tags"], rgb=aligned["rgb"],
                             pseudo_labels=aligned["labels"])) for c in (aligned["cam"], shifted["cam"], noisy)]
        assert values[0] < values[2], (source, guide, values)
        if not (source == "depth" and guide == "gradient"):  # see the SmoothnessLoss docstring
            assert values[0] < values[1], (source, guide, values)


def test_smoothness_weights_and_boundaries() -> None:
    cam = torch.randn(1, 1, 10, 10)
    flat = torch.zeros(1, 1, 10, 10)
    tags = torch.ones(1, 1)
    first = smoothness_loss(cam, tags, flat, first_order_weight=1.0, second_order_weight=0.0)
    second = smoothness_loss(cam, tags, flat, first_order_weight=0.0, second_order_weight=1.0)
    both = smoothness_loss(cam, tags, flat, first_order_weight=2.0, second_order_weight=3.0)
    assert torch.allclose(both, 2 * first + 3 * second)
    labels = torch.zeros(1, 6, 6, dtype=torch.long)
    labels[:, :, 3:] = 1
    assert label_boundaries(labels)[0, 0, 0].tolist() == [0, 0, 1, 0, 0, 0]


def test_boundary_targets_and_bce_sign(device: str) -> None:
    scene = box_scene(device)
    target, valid = boundary_targets(scene["labels"], (16, 16))
    ring = torch.zeros(16, 16, dtype=torch.bool, device=device)
    ring[3:13, 3:13] = True
    ring[5:11, 5:11] = False
    assert bool((target[0, 0].bool() == ring).all()), "a 2-cell band on both sides of the label change"
    assert bool(valid.all())
    good = (target * 2 - 1) * 5.0
    assert float(balanced_bce(good, target, valid)) < float(balanced_bce(-good, target, valid))


def test_boundary_branch_learns_and_is_separate_from_the_model() -> None:
    torch.manual_seed(0)
    scene = box_scene("cpu")
    backbone = TinyBackbone()
    loss = BoundaryLoss(backbone.out_channels, detach_features=True)
    optimizer = torch.optim.Adam(loss.parameters(), lr=0.1)
    features = [f.detach() for f in features_for(scene["rgb"], backbone)]
    values = []
    for _ in range(40):
        value = loss(scene["cam"], scene["depth"], scene["tags"], rgb=scene["rgb"], features=features,
                     pseudo_labels=scene["labels"])
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        values.append(float(value))
    assert values[-1] < 0.7 * values[0], values
    assert loss.last_boundary.shape == (1, 1, 16, 16)
    assert float(loss(scene["cam"], scene["depth"], scene["tags"], rgb=scene["rgb"], features=features)) == 0.0


def test_ssc_pulls_an_uneven_confident_cam_towards_its_superpixel(device: str) -> None:
    scene = box_scene(device)
    segments = torch.zeros(1, 16, 16, dtype=torch.long, device=device)
    segments[:, 4:12, 4:12] = 1  # the box is one superpixel
    even = scene["cam"]
    uneven = even.clone()
    uneven[:, 0, 16:48, 16:48] = 0.6 + 1.4 * torch.rand(32, 32, device=device)
    assert float(self_modulation_loss(even, scene["tags"], segments)) < 1e-6
    assert float(self_modulation_loss(uneven, scene["tags"], segments)) > 1e-3
    pooled = superpixel_mean(torch.arange(4.0, device=device).view(1, 1, 2, 2), torch.tensor([[[0, 0], [1, 1]]],
                                                                                                device=device))
    assert pooled.flatten().tolist() == [0.5, 0.5, 2.5, 2.5]
    mask = torch.ones(1, 1, 6, 6, dtype=torch.bool, device=device)
    assert int(erode(mask, 2).sum()) == 25 and int(erode(mask, 3).sum()) == 16


def test_ssc_is_off_before_start_step_and_depth_superpixels_run() -> None:
    scene = box_scene("cpu")
    cam = scene["cam"].clone().requires_grad_(True)
    assert float(SSCLoss(start_step=10)(cam, scene["depth"], scene["tags"], rgb=scene["rgb"], step=9)) == 0.0
    value = SSCLoss(start_step=0, use_depth=True, n_segments=16)(cam, scene["depth"], scene["tags"],
                                                                 rgb=scene["rgb"], step=0)
    assert torch.isfinite(value)


def test_reconstruction_decoder_learns_more_from_an_aligned_cam() -> None:
    """An informative CAM lets the decoder rebuild the image better than a noise CAM (same budget)."""
    results = []
    for informative in (True, False):
        torch.manual_seed(0)
        scene = box_scene("cpu")
        cam = scene["cam"] if informative else torch.randn_like(scene["cam"])
        loss = ReconstructionLoss(2, 8, TinyBackbone(), lambda x: x / 128.0 - 1.0, hidden_channels=8)
        optimizer = torch.optim.Adam(loss.decoder.parameters(), lr=0.02)
        for _ in range(60):
            value = loss(cam, None, scene["tags"], rgb=scene["rgb"])
            optimizer.zero_grad()
            value.backward()
            optimizer.step()
        results.append(float(value))
        assert all(not p.requires_grad for p in loss.perceptual_net.parameters())
        assert not loss.train().perceptual_net.training, "the frozen perceptual net stays in eval mode"
    assert results[0] < results[1], results


def test_config_keys_and_validation() -> None:
    cfg = DealRosConfig().updated({"loss.isl.enabled": True, "loss.fsl.radius": 6, "loss.smoothness.source": "learned"})
    assert cfg.loss.isl.weight == 0.2 and cfg.loss.fsl.sigma == 5.0 and cfg.loss.smoothness.alpha == 10.0
    assert cfg.loss.smoothness.first_order_weight == 1.0 and cfg.loss.smoothness.second_order_weight == 0.1
    with pytest.raises(ConfigError, match="boundary"):
        cfg.updated({"loss.smoothness.enabled": True})
    with pytest.raises(ConfigError, match=r"loss\.fsl\.radius"):
        cfg.updated({"loss.fsl.radius": 0})


def test_trainer_reports_every_term_and_trains_the_auxiliary_modules() -> None:
    from deal_ros.lab.synthetic import DEFAULT_CLASSES, make_tabletop_scenes
    from deal_ros.training.trainer import OnlineTrainer

    overrides = {"model.input_height": 64, "model.input_width": 80, "model.pretrained_path": "",
                 "model.output_stride": 8, "train.batch_size": 2, "train.device": "cpu",
                 "loss.deal.warmup_steps": 0, "loss.seg_warmup_steps": 0, "loss.ssc.start_step": 0,
                 **{f"loss.{k}.enabled": True for k in ("isl", "fsl", "smoothness", "boundary", "ssc", "recon")}}
    trainer = OnlineTrainer(DealRosConfig(classes=list(DEFAULT_CLASSES)).updated(overrides))
    for frame in make_tabletop_scenes(4, 64, 80, seed=1):
        trainer.add_frame(frame.rgb, frame.depth_m, frame.tags)
    aux = {n: p.detach().clone() for n, p in trainer.structure.named_parameters() if p.requires_grad}
    stats = trainer.train_step()
    for key in ("loss_isl", "loss_fsl", "loss_smooth", "loss_boundary", "loss_recon"):
        assert getattr(stats, key) != 0.0 and math.isfinite(getattr(stats, key)), key
    moved = [n for n, p in trainer.structure.named_parameters() if p.requires_grad and not torch.equal(p, aux[n])]
    assert any(n.startswith("losses.boundary") for n in moved) and any(n.startswith("losses.recon") for n in moved)
    assert not any(k.startswith("losses.") for k in trainer.model.state_dict()), "the model (checkpoint) is unchanged"
    trainer.update_config({"loss.fsl.weight": 0.5, "train.lr": 5e-4})
    assert trainer.structure.losses["boundary"].branch is not None and trainer.train_step() is not None
