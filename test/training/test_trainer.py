from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from deal_ros.config import DealRosConfig
from deal_ros.errors import DegenerateDataError
from deal_ros.frames.tags import UnknownTagError
from deal_ros.lab.synthetic import DEFAULT_CLASSES, make_tabletop_scenes
from deal_ros.storage.checkpoint import CheckpointError
from deal_ros.training import trainer as trainer_module
from deal_ros.training.trainer import OnlineTrainer, batch_to_tensors

SIZE = (64, 80)


def _cfg(**overrides) -> DealRosConfig:
    base = {"model.input_height": SIZE[0], "model.input_width": SIZE[1], "model.pretrained_path": "",
            "model.output_stride": 8, "train.batch_size": 4, "train.device": "cpu",
            "loss.deal.enabled": True, "loss.deal.warmup_steps": 2, "loss.seg_warmup_steps": 1,
            "checkpoint.directory": overrides.pop("directory", "unused")}
    return DealRosConfig(classes=list(DEFAULT_CLASSES)).updated({**base, **overrides})


@pytest.fixture(scope="module")
def scenes():
    return make_tabletop_scenes(8, *SIZE, seed=3)


def _trainer(scenes, **overrides) -> OnlineTrainer:
    trainer = OnlineTrainer(_cfg(**overrides))
    for frame in scenes:
        trainer.add_frame(frame.rgb, frame.depth_m, frame.tags)
    return trainer


def test_a_step_trains_all_three_terms_and_reports_health(scenes) -> None:
    trainer = _trainer(scenes)
    first, second = trainer.train_step(), trainer.train_step()
    assert first.step == 1 and second.step == 2
    assert first.deal_weight == 0.0 and second.deal_weight == 0.5, "lambda ramps from 0"
    assert -1 <= second.loss_deal <= 1 and second.loss_deal != 0 and second.loss_seg > 0
    assert 0 < second.pseudo_coverage <= 1
    assert np.isfinite([second.loss, second.loss_cls]).all() and second.step_time_s > 0


def test_deterministic_with_a_seed_on_cpu(scenes) -> None:
    runs = []
    for _ in range(2):
        trainer = _trainer(scenes)
        runs.append([trainer.train_step().loss for _ in range(3)])
    assert runs[0] == runs[1]


def test_classification_loss_falls_with_imagenet_weights(scenes) -> None:
    # The product's recipe: the built-in ImageNet MobileNetV2 (folded BN kept frozen), backbone at lr / 10.
    trainer = _trainer(scenes, **{"model.pretrained_path": "builtin",
                                  "model.output_stride": 16, "loss.seg_warmup_steps": 1000,
                                  "train.backbone_lr_scale": 0.1})
    losses = [trainer.train_step().loss_cls for _ in range(25)]
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses


def test_resume_continues_step_and_optimizer_state(scenes, tmp_path) -> None:
    trainer = _trainer(scenes, directory=str(tmp_path))
    for _ in range(3):
        trainer.train_step()
    path = trainer.save()
    assert path == tmp_path / "model.safetensors"
    resumed = _trainer(scenes, directory=str(tmp_path))
    resumed.resume()
    assert resumed.step == 3
    a, b = trainer.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert all(torch.equal(a[i]["exp_avg"], b[i]["exp_avg"]) for i in a)
    assert resumed.train_step().step == 4


def test_a_save_gives_up_on_weights_that_stay_locked(scenes, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(trainer_module, "SAVE_LOCK_TIMEOUT_S", 0.2)
    trainer = _trainer(scenes[:1], directory=str(tmp_path))
    held, release = threading.Event(), threading.Event()

    def stuck_holder() -> None:
        with trainer.model_lock:
            held.set()
            release.wait(60)

    holder = threading.Thread(target=stuck_holder, daemon=True)
    holder.start()
    assert held.wait(60)
    try:
        with pytest.raises(CheckpointError, match=r"weights stayed locked for 0.2 s.*previous checkpoint is untouched"):
            trainer.save()
    finally:
        release.set()
        holder.join(60)
    assert not (tmp_path / "model.safetensors").exists()
    assert trainer.save() == tmp_path / "model.safetensors"  # the lock is free again: saves as before


def test_bad_frames_are_refused_clearly(scenes) -> None:
    trainer = _trainer(scenes[:1])
    frame = scenes[0]
    with pytest.raises(UnknownTagError, match=r"'cat'.*known classes"):
        trainer.add_frame(frame.rgb, frame.depth_m, ["cat"])
    with pytest.raises(ValueError, match="aligned"):
        trainer.add_frame(frame.rgb, frame.depth_m[:-1], ["mug"])


def test_mostly_invalid_depth_and_untagged_frames_train_without_nan() -> None:
    trainer = OnlineTrainer(_cfg())
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8)
    for depth, reason in ((np.full(SIZE, np.nan, np.float32), "no valid depth pixel"),
                          (np.zeros(SIZE, np.float32), "no valid depth pixel"),
                          (np.full(SIZE, 65.535, np.float32), "65.535 m at every valid pixel"),
                          (np.linspace(500.0, 2000.0, SIZE[0] * SIZE[1], dtype=np.float32).reshape(SIZE),
                           r"median depth 12\d\d cannot be metres \(likely millimetres")):
        with pytest.raises(DegenerateDataError, match=reason):  # DEAL would be 0: refused where it enters
            trainer.add_frame(rgb, depth, ["mug"])
    depth = np.full(SIZE, np.nan, np.float32)
    depth[:4, :4] = 1.0  # a few valid pixels, not all equal
    depth[0, 0] = 1.5
    for tags in ([], ["mug"]):
        trainer.add_frame(rgb, depth, tags)
    for _ in range(3):
        stats = trainer.train_step()
        assert stats is not None and np.isfinite(stats.loss)


def test_out_of_memory_halves_the_batch(scenes, monkeypatch) -> None:
    trainer = _trainer(scenes)
    real_forward = trainer.model.forward
    calls = {"n": 0}

    def forward_that_runs_out_once(x):
        calls["n"] += 1
        if calls["n"] == 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_forward(x)

    monkeypatch.setattr(trainer.model, "forward", forward_that_runs_out_once)
    assert trainer.train_step() is None
    assert trainer.batch_size == 2
    assert trainer.train_step().batch_size == 2


def test_run_time_updates_and_reset(scenes) -> None:
    trainer = _trainer(scenes)
    trainer.train_step()
    trainer.update_config({"loss.deal.weight": 0.25, "pseudo_label.fg_threshold": 0.8})
    assert trainer.cfg.loss.deal.weight == 0.25
    with pytest.raises(ValueError, match="cannot change at run time"):
        trainer.update_config({"model.backbone": "resnet18"})
    trainer.reset()
    assert trainer.step == 0 and len(trainer.buffer) == 0 and trainer.train_step() is None


def test_class_cover_flags_a_class_recognised_from_the_whole_frame(scenes, caplog) -> None:
    trainer = _trainer(scenes)
    tags = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    labels = torch.zeros(2, 8, 8, dtype=torch.long)
    labels[0] = 1  # 'mug' labelled over the whole frame it is tagged in
    labels[1, :2, :2] = 2  # 'box' on 1/16 of its frame
    with caplog.at_level("WARNING"):
        trainer._update_class_cover(labels, tags)
    assert trainer.class_cover == {"mug": 1.0, "box": 0.0625}
    assert trainer.diffuse_classes() == ["mug"]
    assert any("'mug'" in r.message and "whole frame" in r.message for r in caplog.records)
    stats = trainer.train_step()  # the running cover travels with every step's health
    assert stats.class_cover["box"] >= 0 and "mug" in stats.class_cover


def test_classes_tagged_in_the_same_frames_are_found_and_survive_a_checkpoint(scenes, tmp_path) -> None:
    trainer = OnlineTrainer(_cfg(directory=str(tmp_path)))
    for frame in scenes[:3]:
        trainer.add_frame(frame.rgb, frame.depth_m, ["mug", "box"])
    trainer.note_tags(["ball"])  # a frame another rank of a job buffers
    assert trainer.indistinct_classes() == [["mug", "box"]]
    assert trainer.contrast.merge_map().tolist() == [0, 0, 2]
    assert trainer.weight_snapshot().representatives.tolist() == [0, 0, 2]
    trainer.save()
    resumed = OnlineTrainer(_cfg(directory=str(tmp_path)))
    resumed.resume()
    assert resumed.indistinct_classes() == [["mug", "box"]], "the frames seen before the checkpoint count"
    resumed.add_frame(scenes[0].rgb, scenes[0].depth_m, ["mug"])
    assert resumed.indistinct_classes() == []
    resumed.reset()
    assert resumed.contrast.presence().shape == (0, 3), "reset forgets the frames and their tags"


def test_a_checkpoint_without_class_groups_still_resumes(scenes, tmp_path) -> None:
    from deal_ros.storage.checkpoint import save_checkpoint

    trainer = _trainer(scenes, directory=str(tmp_path))
    save_checkpoint(tmp_path / "model.safetensors", trainer.model, trainer.cfg, 5, trainer.optimizer,
                    extra={"trust": trainer.trust.state_dict()})  # as written before class groups existed
    fresh = OnlineTrainer(_cfg(directory=str(tmp_path)))
    fresh.resume()
    assert fresh.step == 5 and fresh.indistinct_classes() == []


def test_merged_pseudo_labels_never_name_the_other_members_of_a_group(scenes) -> None:
    trainer = OnlineTrainer(_cfg(**{"pseudo_label.merge_indistinct": True, "pseudo_label.object_threshold": 0.0}))
    for frame in scenes:
        trainer.add_frame(frame.rgb, frame.depth_m, ["mug", "box"])
    rgb, depth_m, tags = batch_to_tensors(trainer.buffer.sample(4, np.random.default_rng(0)), trainer.device)
    out = trainer.model(trainer.model.normalize_input(rgb))
    reps = torch.from_numpy(trainer.contrast.merge_map())
    merged = trainer.objective(out, rgb, depth_m, tags, step=5, representatives=reps).pseudo_labels
    plain = trainer.objective(out, rgb, depth_m, tags, step=5).pseudo_labels
    assert (plain == 2).any(), "without the merge the box takes some object pixels"
    assert not (merged == 2).any() and (merged == 1).sum() >= (plain == 1).sum()
    assert trainer.train_step() is not None  # the trainer passes the merge to its objective
