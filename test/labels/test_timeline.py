"""Window scoring over wall time: one confusion matrix per window, steps and losses beside, first times to a level."""

from __future__ import annotations

import numpy as np
import pytest

from deal_ros.labels.timeline import TimelineScorer, seconds_to_miou

GT = np.array([[0, 1], [0, 1]], np.uint8)
HALF_WRONG = np.array([[0, 1], [1, 1]], np.uint8)
"""Against GT: background IoU 1/2, class 1 IoU 2/3, mIoU 7/12."""


def scored() -> TimelineScorer:
    scorer = TimelineScorer(num_classes=2, window_s=10.0)
    scorer.add_mask(1.0, HALF_WRONG, GT)
    scorer.add_mask(2.0, GT, None)  # a frame without ground truth: counted, not scored
    scorer.add_step(3.0, 1.0)
    scorer.add_step(4.0, 0.5)
    scorer.add_mask(12.0, GT, GT, published=False)  # withheld while warming up
    scorer.add_mask(25.0, GT, GT)
    scorer.add_step(30.0, 0.25)  # after the end: folded into the last window
    return scorer


def test_windows_hold_their_masks_steps_and_losses():
    windows = scored().windows(27.0)
    assert [(w.start_s, w.end_s) for w in windows] == [(0.0, 10.0), (10.0, 20.0), (20.0, 27.0)]
    first, second, last = windows
    assert first.miou == pytest.approx(7 / 12)
    assert (first.masks, first.masks_all, first.steps, first.loss) == (2, 2, 2, 0.75)
    assert second.miou is None and second.miou_all == 1.0
    assert (second.masks, second.masks_all, second.steps, second.loss) == (0, 1, 0, None)
    assert last.miou == 1.0 and last.steps == 1 and last.loss == 0.25


def test_a_window_accumulates_one_confusion_matrix():
    """Two masks in one window: the IoU of their summed counts (3/4 and 4/5), not the mean of per-mask mIoUs."""
    scorer = TimelineScorer(num_classes=2)
    scorer.add_mask(1.0, HALF_WRONG, GT)
    scorer.add_mask(5.0, GT, GT)
    (window,) = scorer.windows(10.0)
    assert window.miou == pytest.approx((3 / 4 + 4 / 5) / 2)
    assert window.miou != pytest.approx((7 / 12 + 1.0) / 2)


def test_seconds_to_miou_is_the_end_of_the_first_window_at_the_level():
    windows = scored().windows(27.0)
    assert seconds_to_miou(windows) == {"0.5": 10.0, "0.6": 27.0, "0.7": 27.0}
    assert seconds_to_miou(windows, all_masks=True) == {"0.5": 10.0, "0.6": 20.0, "0.7": 20.0}
    assert seconds_to_miou(windows, (0.99, 1.01)) == {"0.99": 27.0, "1.01": None}


def test_no_mask_no_score():
    windows = TimelineScorer(num_classes=3, window_s=5.0).windows(12.0)
    assert [(w.start_s, w.end_s, w.miou, w.masks, w.loss) for w in windows] == [
        (0.0, 5.0, None, 0, None), (5.0, 10.0, None, 0, None), (10.0, 12.0, None, 0, None)]
    assert seconds_to_miou(windows) == {"0.5": None, "0.6": None, "0.7": None}


def test_bad_window_length_refused():
    with pytest.raises(ValueError, match="window_s"):
        TimelineScorer(2, window_s=0.0)
