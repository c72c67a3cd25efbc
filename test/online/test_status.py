"""Status and diagnostics as plain data: latency, rates, trainer and segmenter status."""

from __future__ import annotations

import pytest

from deal_ros.online.status import (
    ERROR,
    OK,
    WARN,
    LatencyStats,
    RateLimiter,
    RateMeter,
    clock_note,
    masks_for_planners,
    segmenter_diagnostics,
    segmenter_status,
    stamp_latency_s,
    trainer_diagnostics,
    trainer_status,
    trust_message,
    warming_up,
)


def test_stamp_latency_on_the_node_clock():
    assert stamp_latency_s(10.5, 10.0) == 0.5
    assert stamp_latency_s(10.0, 10.02) == pytest.approx(-0.02)  # sim time: /clock ticks trail the stamps
    recorded_2023, now_2026 = 1_700_000_000.0, 1_796_000_000.0
    assert stamp_latency_s(now_2026, recorded_2023) is None  # a bag played without --clock / use_sim_time
    assert "without --clock" in clock_note(now_2026, recorded_2023) and clock_note(10.5, 10.0) == ""


def test_latency_stats():
    stats = LatencyStats(window=3)
    assert stats.summary()["latency_s"] is None
    for value in (0.1, 0.5, 0.2, 0.3):
        stats.add(latency_s=value, wait_s=None, inference_s=value / 2)
    summary = stats.summary()
    assert summary["latency_s"] == {"last": 0.3, "median": 0.3, "max": 0.5}  # the last 3: 0.5, 0.2, 0.3
    assert summary["wait_s"] is None and summary["inference_s"]["max"] == 0.25




def test_rate_meter_and_limiter():
    meter = RateMeter(window_s=10)
    for t in range(11):
        meter.tick(t * 0.5)
    assert meter.rate(5.0) == pytest.approx(2.0)
    assert meter.rate(100.0) == 0.0
    limiter = RateLimiter(2.0)
    assert limiter.wait_s(0.0) == 0.0
    limiter.mark(0.0)
    assert limiter.wait_s(0.1) == pytest.approx(0.4)
    assert limiter.wait_s(0.6) == 0.0
    assert RateLimiter(0.0).wait_s(0.0) == 0.0


def _trainer_status(**over):
    base = dict(step=12, paused=False, tags=["mug"], tags_known=True, classes=["mug", "box"], buffer_frames=3,
                buffer_capacity=500, buffer_bytes=3 * 2**20, class_counts=[3, 0], steps_per_s=1.5,
                last={"loss": 0.7, "loss_deal": -0.2, "pseudo_coverage": 0.4, "step_time_s": 0.3},
                device="cuda:0 (Orin, 100/8000 MiB)", device_type="cuda", gpu_memory_mb=100.0, batch_size=4,
                keyframes_accepted=3, keyframes_rejected=40, pairs=43, skipped_frames=0,
                sync_warning=None, last_checkpoint="", checkpoint_error="", requested_device="auto")
    base.update(over)
    return trainer_status(**base)


def test_trainer_status_content():
    status = _trainer_status()
    assert status["buffer"] == {"frames": 3, "capacity": 500, "fill": 0.006, "mbytes": 3.0}
    assert status["frames_per_class"] == {"mug": 3, "box": 0}
    assert status["last_step"]["loss_deal"] == -0.2 and status["gpu_memory_mb"] == 100.0
    entries = {e.name: e for e in trainer_diagnostics(status)}
    assert entries["deal_ros: training"].level == OK and entries["deal_ros: training"].values["loss_deal"] == "-0.2"
    assert entries["deal_ros: buffer"].level == WARN and "box" in entries["deal_ros: buffer"].message
    assert entries["deal_ros: device"].level == OK
    assert status["state"] == "training" and entries["deal_ros: input"].level == OK


def test_trainer_diagnostics_levels():
    cpu = {e.name: e for e in trainer_diagnostics(_trainer_status(device_type="cpu", requested_device="auto"))}
    assert cpu["deal_ros: device"].level == WARN and "CPU" in cpu["deal_ros: device"].message
    forced = {e.name: e for e in trainer_diagnostics(_trainer_status(device_type="cpu", requested_device="cuda"))}
    assert forced["deal_ros: device"].level == ERROR
    no_tags = {e.name: e for e in trainer_diagnostics(_trainer_status(tags_known=False))}
    assert no_tags["deal_ros: training"].level == WARN and "no tags" in no_tags["deal_ros: training"].message
    ckpt = {e.name: e for e in trainer_diagnostics(_trainer_status(checkpoint_error="disk full"))}
    assert ckpt["deal_ros: checkpoint"].level == ERROR
    stale = {e.name: e for e in trainer_diagnostics(_trainer_status(sync_warning="no pair"))}
    assert stale["deal_ros: input"].level == WARN
    depthless = {e.name: e for e in trainer_diagnostics(_trainer_status(depth_degenerate=4))}
    assert depthless["deal_ros: input"].level == WARN and "4 keyframes left out" in depthless["deal_ros: input"].message
    diffuse = _trainer_status()
    diffuse["last_step"] = {**diffuse["last_step"], "class_cover": {"mug": 0.7}, "diffuse_classes": ["mug"]}
    quality = {e.name: e for e in trainer_diagnostics(diffuse)}["deal_ros: label quality"]
    assert quality.level == WARN and "mug" in quality.message and quality.values["cover_mug"] == "0.7"
    assert _trainer_status(paused=True)["state"] == "paused"
    assert _trainer_status(tags_known=False)["state"] == "waiting for tags"
    assert _trainer_status(buffer_frames=0)["state"] == "waiting for frames"


def _segmenter_status(**over):
    stats = LatencyStats()
    stats.add(latency_s=0.12, receive_latency_s=0.1, wait_s=0.01, inference_s=0.05, processing_s=0.08)
    base = dict(model_step=250, min_model_step=200, withhold=True, frames=10, masks_withheld=0, dropped=3,
                times=stats.summary(), fps=9.5, device="cpu", reload_error="", sync_warning=None, skipped_frames=0,
                tags=("mug",), trusted=True, withhold_until_trusted=False)
    base.update(over)
    return segmenter_status(**base)


def test_segmenter_status():
    status = _segmenter_status()
    assert status["state"] == "ready" and status["frames_dropped"] == 3
    assert status["latency_s"]["median"] == 0.12 and status["inference_s"]["last"] == 0.05
    (entry,) = segmenter_diagnostics(status)
    assert entry.level == OK and "latency 0.120 s median" in entry.message and "0.12" in entry.values["latency_s"]


def test_segmenter_warming_up():
    assert warming_up(-1, 200) and warming_up(199, 200) and not warming_up(200, 200)
    status = _segmenter_status(model_step=12, masks_withheld=7)
    assert status["state"] == "warming up" and status["masks_withheld"] == 7
    (entry,) = segmenter_diagnostics(status)
    assert entry.level == WARN and entry.message.startswith("warming up: model step 12 < 200 (masks withheld)")
    (flagged,) = segmenter_diagnostics(_segmenter_status(model_step=12, withhold=False))
    assert "masks NOT for planners" in flagged.message


TRUST = {"masks_trusted": False, "head_agreement": 0.41, "trusted_since_step": None, "steps_measured": 20,
         "window_steps": 20, "min_agreement": 0.6, "release_below": 0.5, "hold_steps": 10}


def test_trainer_status_says_whether_masks_are_trusted():
    assert _trainer_status()["masks_trusted"] is False and _trainer_status()["head_agreement"] is None
    untrusted = _trainer_status(trust=TRUST)
    assert untrusted["masks_trusted"] is False and untrusted["head_agreement"] == 0.41
    entry = {e.name: e for e in trainer_diagnostics(untrusted)}["deal_ros: mask trust"]
    assert entry.level == WARN and entry.message == ("masks not trusted yet: head agreement 0.410 over 20 steps "
                                                     "(needs >= 0.6 over 20 steps, 10 in a row)")
    assert entry.values["min_agreement"] == "0.6"
    trusted = _trainer_status(trust={**TRUST, "masks_trusted": True, "head_agreement": 0.72, "trusted_since_step": 180})
    assert trusted["masks_trusted"] is True and trusted["trust"]["trusted_since_step"] == 180
    entry = {e.name: e for e in trainer_diagnostics(trusted)}["deal_ros: mask trust"]
    assert entry.level == OK and entry.message == "masks trusted since step 180: head agreement 0.720"
    assert "no pseudo-labels measured" in trust_message({**TRUST, "head_agreement": None})


def test_masks_for_planners_by_warm_up_and_trust():
    # (warming, trusted, while_warming_up, until_trusted) -> published
    assert masks_for_planners(False, True, "withhold", "withhold")
    assert masks_for_planners(False, False, "withhold", "mark")  # marked untrusted in deal/mask_info
    assert not masks_for_planners(False, False, "withhold", "withhold")
    assert not masks_for_planners(True, True, "withhold", "mark")  # warming up and withheld, trusted or not
    assert masks_for_planners(True, False, "publish", "mark")
    assert not masks_for_planners(True, False, "publish", "withhold")


def test_segmenter_status_and_diagnostics_tell_untrusted_masks():
    status = _segmenter_status(trusted=False, withhold_until_trusted=True)
    assert status["masks_trusted"] is False and status["masks_withheld_until_trusted"] is True
    (entry,) = segmenter_diagnostics(status)
    assert entry.level == WARN and entry.message.startswith("masks not trusted yet by the trainer (masks withheld)")
    (marked,) = segmenter_diagnostics(_segmenter_status(trusted=False))
    assert "masks marked untrusted" in marked.message
    (ready,) = segmenter_diagnostics(_segmenter_status(trusted=True))
    assert ready.level == OK


def test_classes_the_tags_cannot_tell_apart_are_a_warning_naming_them():
    assert {e.name: e for e in trainer_diagnostics(_trainer_status())}["deal_ros: class groups"].level == OK
    status = _trainer_status(indistinct_classes=[["mug", "box"]], merge_indistinct=True)
    assert status["indistinct_classes"] == [["mug", "box"]] and status["indistinct_merged"] is True
    entry = {e.name: e for e in trainer_diagnostics(status)}["deal_ros: class groups"]
    assert entry.level == WARN and entry.values == {"group_0": "mug,box"}
    assert entry.message == ("classes mug, box were tagged in exactly the same frames: tags cannot tell them apart "
                             "(labelled as mug)")
