from __future__ import annotations

import numpy as np
import pytest

from deal_ros.config import DealRosConfig
from deal_ros.frames.tags import UnknownTagError
from deal_ros.inference.segmenter import Segmenter
from deal_ros.storage.checkpoint import CheckpointError, load_checkpoint
from deal_ros.training.trainer import OnlineTrainer

CFG = DealRosConfig(classes=["mug", "box"]).updated({
    "model.input_height": 64, "model.input_width": 80, "train.device": "cpu", "train.batch_size": 2,
    "model.pretrained_path": ""})


def _frame(height: int = 480, width: int = 640):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return rgb, rng.uniform(0.4, 2, (height, width)).astype(np.float32)


def test_outputs_at_camera_resolution() -> None:
    rgb, depth = _frame()
    result = Segmenter(CFG, device="cpu")(rgb, depth, ["mug"])
    assert result.mask.shape == (480, 640) and result.mask.dtype == np.uint8
    assert result.mask.max() <= 2
    assert result.confidence.shape == (480, 640) and result.confidence.dtype == np.float32
    assert ((result.confidence > 0) & (result.confidence <= 1)).all()
    assert result.pseudo_label.shape == (480, 640) and result.pseudo_label.dtype == np.uint8
    assert set(np.unique(result.pseudo_label)) <= {0, 1, 255}, "only tagged classes, background and ignore"
    assert Segmenter(CFG, device="cpu")(rgb).pseudo_label is None


def test_bad_input_is_refused() -> None:
    segmenter = Segmenter(CFG, device="cpu")
    rgb, depth = _frame(48, 64)
    with pytest.raises(ValueError, match="sizes differ"):
        segmenter(rgb, depth[:-1])
    with pytest.raises(ValueError, match="uint8"):
        segmenter(rgb.astype(np.float32))
    with pytest.raises(UnknownTagError):
        segmenter(rgb, depth, ["cat"])


def test_hot_reload_from_a_trainer_checkpoint(tmp_path) -> None:
    trainer = OnlineTrainer(CFG.updated({"checkpoint.directory": str(tmp_path)}))
    rgb, depth = _frame(64, 80)
    trainer.add_frame(rgb, depth, ["box"])
    for _ in range(3):
        trainer.train_step()
    path = trainer.save()
    segmenter = Segmenter(CFG, device="cpu")
    before = segmenter(rgb).confidence
    assert segmenter.load(str(path)) == 3 and segmenter.step == 3 and not segmenter.trusted
    after = segmenter(rgb).confidence
    assert not np.allclose(before, after)
    np.testing.assert_allclose(after, Segmenter(CFG, trainer.model)(rgb).confidence, rtol=1e-5, atol=1e-6)
    other = Segmenter(CFG.updated({"classes": ["cup", "box"]}), device="cpu")
    with pytest.raises(CheckpointError, match="classes"):
        other.load(str(path))
    trainer.trust.trusted = True  # the trust the trainer had at save time travels with the checkpoint
    segmenter.load(str(trainer.save()))
    assert segmenter.trusted


def test_the_auto_network_size_is_the_cpus_for_trainer_checkpoint_and_segmenter(tmp_path) -> None:
    auto = CFG.updated({"model.input_height": 0, "model.input_width": 0, "checkpoint.directory": str(tmp_path)})
    trainer = OnlineTrainer(auto)
    assert (trainer.cfg.model.input_height, trainer.cfg.model.input_width) == (128, 160)
    assert trainer.buffer.size == (128, 160)
    trainer.add_frame(*_frame(64, 80), ["box"])
    trainer.train_step()
    saved = load_checkpoint(trainer.save()).config.model
    assert (saved.input_height, saved.input_width) == (128, 160)  # what it trained at, for export and label
    segmenter = Segmenter(auto, device="cpu")
    segmenter.cfg = auto.updated({"pseudo_label.fg_threshold": 0.4})  # a run-time parameter change, as the node does
    assert (segmenter.cfg.model.input_height, segmenter.cfg.model.input_width) == (128, 160)
    assert segmenter(*_frame(48, 64)).mask.shape == (48, 64)


def test_pseudo_labels_merge_the_classes_the_checkpoints_tags_could_not_tell_apart(tmp_path) -> None:
    trainer = OnlineTrainer(CFG.updated({"checkpoint.directory": str(tmp_path)}))
    rgb, depth = _frame(64, 80)
    trainer.add_frame(rgb, depth, ["mug", "box"])  # always together: the tags cannot tell them apart
    path = str(trainer.save())
    plain = Segmenter(CFG, device="cpu")
    plain.load(path)
    merging = Segmenter(CFG.updated({"pseudo_label.merge_indistinct": True}), device="cpu")
    merging.load(path)
    assert plain.representatives.tolist() == merging.representatives.tolist() == [0, 0]
    box = plain(rgb, tags=["box"]).pseudo_label  # no depth: the CAM alone decides
    assert (box == 2).any()
    np.testing.assert_array_equal(merging(rgb, tags=["box"]).pseudo_label, np.where(box == 2, 1, box))
    shared = Segmenter(CFG.updated({"pseudo_label.merge_indistinct": True}), device="cpu",
                       weights=_handoff(trainer))
    shared(rgb)  # the first frame swaps in the trainer's snapshot, representatives with it
    assert shared.representatives.tolist() == [0, 0]


def _handoff(trainer: OnlineTrainer):
    from deal_ros.compute.live import WeightHandoff

    handoff = WeightHandoff()
    handoff.publish(trainer.weight_snapshot())
    return handoff
