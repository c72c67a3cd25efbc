"""The trust signal: head agreement with the pseudo-labels (exact numbers), the hysteresis rule, and a real run."""

from __future__ import annotations

import pytest
import torch

from deal_ros.config import IGNORE_INDEX, DealRosConfig, TrustConfig
from deal_ros.lab.synthetic import CLOSEUP_CLASSES, make_closeup_scenes
from deal_ros.storage.checkpoint import load_checkpoint
from deal_ros.training.trainer import OnlineTrainer
from deal_ros.training.trust import TrustTracker, checkpoint_trusted, head_agreement


def _logits_of(argmax: list[list[int]], classes: int = 3) -> torch.Tensor:
    """(1, classes, h, w) logits whose argmax is `argmax`."""
    index = torch.tensor(argmax)
    return torch.nn.functional.one_hot(index, classes).permute(2, 0, 1)[None].float() * 5.0


def test_agreement_counts_only_confident_pixels_exactly() -> None:
    i = IGNORE_INDEX
    labels = torch.tensor([[[0, 0, 1, 1], [2, 2, i, i]]])
    logits = _logits_of([[0, 1, 1, 1], [2, 0, 2, 1]])  # the last two pixels are ignored: their argmax is free
    agreement = head_agreement(logits, labels)
    assert agreement is not None
    # 6 confident pixels, 4 right. IoU: background 1/3 (tp 1, label 2 + pred 2 - 1), class 1 2/3, class 2 1/2.
    assert agreement.pixel_accuracy == pytest.approx(4 / 6)
    assert agreement.miou == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)


def test_agreement_skips_absent_classes_and_needs_a_confident_pixel() -> None:
    labels = torch.tensor([[[0, 0], [1, 1]]])
    perfect = head_agreement(_logits_of([[0, 0], [1, 1]], classes=4), labels)
    assert perfect is not None and perfect.miou == 1.0 and perfect.pixel_accuracy == 1.0  # classes 2, 3 absent
    wrong_class = head_agreement(_logits_of([[0, 0], [3, 3]], classes=4), labels)
    assert wrong_class is not None and wrong_class.miou == pytest.approx(1 / 3)  # bg 1, class 1 0, class 3 0
    assert head_agreement(_logits_of([[0, 1], [1, 0]]), torch.full((1, 2, 2), IGNORE_INDEX)) is None


def _feed(tracker: TrustTracker, values: list[float | None], cfg: TrustConfig, start: int = 1) -> list[bool]:
    verdicts = []
    for step, value in enumerate(values, start=start):
        tracker.update(step, value, cfg)
        verdicts.append(tracker.trusted)
    return verdicts


def test_trust_needs_a_full_window_held_and_releases_below_the_margin() -> None:
    cfg = TrustConfig(min_agreement=0.6, release_margin=0.1, window_steps=3, hold_steps=2)
    tracker = TrustTracker()
    # steps 1-2: the window is not full; 3: full, mean 0.9 (run 1); 4: run 2 -> trusted at step 4
    assert _feed(tracker, [0.9, 0.9, 0.9, 0.9], cfg) == [False, False, False, True]
    assert tracker.since_step == 4 and tracker.agreement == pytest.approx(0.9)
    # no pseudo-labels: nothing changes; means 0.7, 0.5333 (still >= 0.5: kept), 0.3667 (released)
    assert _feed(tracker, [None, 0.3, 0.4, 0.4], cfg, start=5) == [True, True, True, False]
    assert tracker.since_step is None
    summary = tracker.summary(cfg)
    assert summary["masks_trusted"] is False and summary["head_agreement"] == pytest.approx(0.3667)
    assert summary["release_below"] == 0.5 and summary["steps_measured"] == 3


def test_trust_does_not_flicker_and_a_dip_restarts_the_hold() -> None:
    cfg = TrustConfig(min_agreement=0.6, release_margin=0.1, window_steps=1, hold_steps=3)
    tracker = TrustTracker()
    # a dip below the threshold before the hold is complete restarts the run
    assert _feed(tracker, [0.7, 0.7, 0.5, 0.7, 0.7, 0.7], cfg) == [False, False, False, False, False, True]
    # values between release (0.5) and entry (0.6) keep it trusted: no flicker around the threshold
    assert _feed(tracker, [0.55, 0.65, 0.52, 0.58], cfg, start=7) == [True] * 4
    assert _feed(tracker, [0.49], cfg, start=11) == [False]


def test_trust_state_round_trips_and_reset_forgets() -> None:
    cfg = TrustConfig(window_steps=2, hold_steps=1, min_agreement=0.5)
    tracker = TrustTracker()
    _feed(tracker, [0.6, 0.8], cfg)
    copy = TrustTracker()
    copy.load_state_dict(tracker.state_dict())
    assert copy.trusted and copy.since_step == 2 and list(copy.recent) == [0.6, 0.8]
    assert checkpoint_trusted({"trust": tracker.state_dict()}) and not checkpoint_trusted({})
    tracker.reset()
    assert not tracker.trusted and tracker.agreement is None and tracker.summary(cfg)["head_agreement"] is None


def _closeup_trainer(**overrides) -> OnlineTrainer:
    frames = make_closeup_scenes(16, 32, 48, seed=100)
    cfg = DealRosConfig(classes=list(CLOSEUP_CLASSES)).updated({
        "model.input_height": 32, "model.input_width": 48, "train.device": "cpu", "loss.seg_warmup_steps": 2,
        "pseudo_label.refine": "none", "train.batch_size": 4, **overrides})
    trainer = OnlineTrainer(cfg)
    for frame in frames:
        trainer.add_frame(frame.rgb, frame.depth_m, frame.tags)
    return trainer


def test_a_short_real_run_agrees_more_at_the_end_and_saves_its_verdict(tmp_path) -> None:
    trainer = _closeup_trainer(**{"checkpoint.directory": str(tmp_path), "trust.window_steps": 5,
                                  "trust.hold_steps": 1, "trust.min_agreement": 0.05})
    agreements = []
    while trainer.step < 40:
        stats = trainer.train_step()
        if stats is not None and stats.head_agreement is not None:
            agreements.append(stats.head_agreement)
    assert len(agreements) >= 30
    first, last = sum(agreements[:5]) / 5, sum(agreements[-5:]) / 5
    assert last > first + 0.05, (first, last)
    assert stats.trust_agreement == pytest.approx(sum(agreements[-5:]) / 5)
    assert stats.masks_trusted and trainer.weight_snapshot().trusted
    path = trainer.save()
    assert checkpoint_trusted(load_checkpoint(path).extra)
    resumed = _closeup_trainer(**{"checkpoint.directory": str(tmp_path)})
    resumed.resume(path)
    assert resumed.trust.trusted and resumed.trust.since_step == trainer.trust.since_step
    resumed.reset()
    assert not resumed.trust.trusted and not resumed.weight_snapshot().trusted
