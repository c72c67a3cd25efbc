"""Training and inference in one process: step control, weight handoff, the training loop (rclpy-free, CI).

Tiny random-init networks (64x80 input, batch 2) keep every step well under a second on a CPU.
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import pytest
import torch

from deal_ros.compute.live import StepControl, TrainingInterrupted, WeightHandoff
from deal_ros.config import DealRosConfig
from deal_ros.inference.segmenter import Segmenter
from deal_ros.online.keyframes import KeyframeGate
from deal_ros.online.training_loop import OTHER_SHARE, KeyframeIntake, LossDivergedError, TrainingLoop
from deal_ros.training.trainer import OnlineTrainer

TINY = {"model.pretrained_path": "", "model.input_height": 64, "model.input_width": 80,
        "model.seg_head_channels": 16, "train.batch_size": 2, "train.device": "cpu", "loss.seg_warmup_steps": 0,
        "pseudo_label.refine": "none", "checkpoint.period_steps": 0}
CLASSES = ["mug", "box"]
LOG = logging.getLogger("test_logic_live")


def tiny_cfg(**over) -> DealRosConfig:
    return DealRosConfig(classes=CLASSES).updated({**TINY, **over})


def frame(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    depth = np.full((64, 80), 1.5, np.float32)
    depth[10:40, 20:50] = 0.8
    return rng.integers(0, 256, (64, 80, 3), dtype=np.uint8), depth


@pytest.fixture()
def trainer(one_thread) -> OnlineTrainer:
    trainer = OnlineTrainer(tiny_cfg())
    for i in range(3):
        trainer.add_frame(*frame(i), ["mug"])
    return trainer


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameters only: a forward pass in train mode moves BatchNorm's running statistics, an update is what counts."""
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def test_interrupt_mid_step_leaves_weights_and_step_alone(trainer):
    before = weights(trainer.model)
    calls = []

    def interrupt_at_cam_head(module, inputs):  # half-way through the forward pass
        calls.append(1)
        trainer.control.interrupt("pause")

    handle = trainer.model.cam_head.register_forward_pre_hook(interrupt_at_cam_head)
    assert trainer.train_step() is None
    handle.remove()
    assert calls and trainer.step == 0 and trainer.interrupted_steps == 1 and same(before, weights(trainer.model))
    assert trainer.train_step() is None and trainer.interrupted_steps == 2  # stays interrupted until resume()
    trainer.control.resume("pause")
    stats = trainer.train_step()
    assert stats is not None and trainer.step == 1 and not same(before, weights(trainer.model))


def test_interrupt_during_backward(trainer):
    fired = []

    def on_grad(grad):
        if not fired:
            fired.append(1)
            trainer.control.interrupt("stop")

    handle = trainer.model.cam_head.weight.register_hook(on_grad)  # the first gradient of the backward pass
    before = weights(trainer.model)
    assert trainer.train_step() is None
    handle.remove()
    assert fired and trainer.step == 0 and same(before, weights(trainer.model))


def test_hooks_act_only_in_the_stepping_thread(trainer):
    trainer.control.interrupt("stop")
    with torch.no_grad():  # anyone else may run the model (an evaluation): no TrainingInterrupted there
        trainer.model.eval()(torch.zeros(1, 3, 64, 80))
    with pytest.raises(TrainingInterrupted), trainer.control.stepping():
        pass


def test_reset_interrupts_a_step_in_flight(trainer):
    in_forward, release = threading.Event(), threading.Event()

    def hold(module, inputs):
        in_forward.set()
        release.wait(10.0)

    handle = trainer.model.cam_head.register_forward_pre_hook(hold)
    results = []
    worker = threading.Thread(target=lambda: results.append(trainer.train_step()))
    worker.start()
    assert in_forward.wait(30.0)
    resetter = threading.Thread(target=trainer.reset)  # the ~/reset service while a step runs
    resetter.start()
    assert wait_for(lambda: trainer.control.interrupted, 10.0)
    release.set()
    worker.join(30.0)
    resetter.join(30.0)
    handle.remove()
    assert results == [None] and trainer.step == 0 and trainer.interrupted_steps == 1 and len(trainer.buffer) == 0
    trainer.add_frame(*frame(0), ["mug"])
    assert trainer.train_step() is not None and trainer.step == 1  # reset lifted its interruption


def run_step_beside_inference(trainer: OnlineTrainer, share: float) -> tuple[float, float]:
    """One training step while another thread segments all the time; returns (step wall time, waited)."""
    control = trainer.control
    control.yield_share, control.max_yield_s = share, 0.05
    stop = threading.Event()

    def segment_forever():
        while not stop.is_set():
            with control.inference():
                time.sleep(0.02)

    segmenter = threading.Thread(target=segment_forever)
    segmenter.start()
    try:
        started = time.monotonic()
        assert trainer.train_step() is not None
        return time.monotonic() - started, control.yield_s
    finally:
        stop.set()
        segmenter.join()


def test_training_steps_aside_for_at_most_its_share(trainer):
    wall_s, waited_s = run_step_beside_inference(trainer, 0.5)
    assert 0.0 < waited_s <= 0.5 * wall_s + 0.05  # a segmenter busy all the time cannot starve training
    trainer.control.yield_s = 0.0
    assert run_step_beside_inference(trainer, 0.0)[1] == 0.0  # off (CUDA): never waits


def test_inference_goes_first_when_it_leaves_time(trainer):
    control = trainer.control
    control.yield_share, control.max_yield_s = 0.9, 30.0
    done, worked, segmenting = threading.Event(), threading.Event(), threading.Event()

    def half_way(module, inputs):  # the step has worked: it may now wait up to 9x as long
        worked.set()
        segmenting.wait(10.0)

    handle = trainer.model.cam_head.register_forward_pre_hook(half_way)
    worker = threading.Thread(target=lambda: (trainer.train_step(), done.set()))
    worker.start()
    assert worked.wait(30.0)
    with control.inference():
        segmenting.set()
        assert not done.wait(0.3), "the step ran through an inference"
    assert done.wait(30.0) and trainer.step == 1
    worker.join()
    handle.remove()
    assert control.yield_s > 0.2


def test_handoff_gives_the_segmenter_its_own_copy(trainer):
    handoff = WeightHandoff()
    segmenter = Segmenter(trainer.cfg, device="cpu", weights=handoff, control=trainer.control)
    rgb, depth = frame(7)
    assert not segmenter.refresh() and segmenter.step == -1
    trainer.train_step()
    handoff.publish(trainer.weight_snapshot())
    result = segmenter(rgb, depth)
    assert segmenter.step == 1 and segmenter.swaps == 1 and "swap" in result.timing_s
    reference = Segmenter(trainer.cfg, trainer.model)(rgb, depth)  # the trainer's own model, in eval for once
    np.testing.assert_allclose(result.confidence, reference.confidence, rtol=1e-5, atol=1e-6)
    trainer.train_step()  # training on does not touch the segmenter's copy until the next snapshot
    np.testing.assert_array_equal(segmenter(rgb, depth).confidence, result.confidence)
    assert segmenter.step == 1 and handoff.take() is None
    # the snapshot carries the trainer's trust verdict of those weights
    assert not segmenter.trusted
    trainer.trust.trusted = True
    handoff.publish(trainer.weight_snapshot())
    assert segmenter.refresh() and segmenter.trusted and segmenter.step == 2


def test_snapshot_is_detached():
    model = torch.nn.Linear(2, 2)
    handoff = WeightHandoff()
    from deal_ros.compute.live import snapshot_state

    handoff.publish(snapshot_state(model, step=3))
    with torch.no_grad():
        model.weight.add_(1.0)
    snapshot = handoff.take()
    assert snapshot.step == 3 and not torch.equal(snapshot.state["weight"], model.weight)
    assert handoff.take() is None and handoff.published == handoff.taken == 1


class Saves:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, why: str) -> tuple[bool, str]:
        self.calls.append(why)
        return True, why


def wait_for(condition, timeout_s: float = 60.0) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.01)
    return False


def test_training_loop_trains_hands_over_saves_and_stops(trainer):
    saves = Saves()
    trainer.cfg = trainer.cfg.updated({"checkpoint.period_steps": 2})
    loop = TrainingLoop(trainer, LOG, ready=lambda: True, save=saves, handoff=WeightHandoff(), sync_every_steps=1)
    loop.start()
    try:
        assert wait_for(lambda: loop.handoff.published >= 3 and "period" in saves.calls), "no training"
        assert loop.last_stats["step"] >= 1 and trainer.step >= 3
        loop.request_config({"train.lr": 5e-4})
        assert wait_for(lambda: trainer.cfg.train.lr == 5e-4)
        loop.request_config({"pseudo_label.bg_threshold": 0.99})  # invalid with fg 0.6: refused, loop goes on
        steps = trainer.step
        assert wait_for(lambda: trainer.step > steps + 1) and trainer.cfg.pseudo_label.bg_threshold != 0.99
        loop.set_paused(True)
        paused_at = trainer.step
        time.sleep(0.3)
        assert trainer.step <= paused_at + 1 and loop.paused
        loop.set_paused(False)
        assert wait_for(lambda: trainer.step > paused_at + 1)
    finally:
        assert loop.stop(timeout_s=10.0)  # the bound is stop's own deadline: wall-clock asserts flake under load


def test_training_loop_waits_until_ready(trainer):
    ready = threading.Event()
    loop = TrainingLoop(trainer, LOG, ready=ready.is_set, save=Saves())
    loop.start()
    time.sleep(0.3)
    assert trainer.step == 0
    ready.set()
    loop.wake()
    assert wait_for(lambda: trainer.step >= 1)
    assert loop.stop()


def test_stop_interrupts_a_long_step(one_thread):
    trainer = OnlineTrainer(tiny_cfg(**{"model.input_height": 240, "model.input_width": 320,
                                        "train.batch_size": 8}))
    trainer.add_frame(*frame(0), ["mug"])
    layers = []
    trainer.model.register_forward_pre_hook(lambda module, inputs: layers.append(time.monotonic()))
    loop = TrainingLoop(trainer, LOG, ready=lambda: True, save=Saves())
    loop.start()
    assert wait_for(lambda: layers, 30.0)  # a step (seconds at this size on a CPU) is in flight
    assert loop.stop(timeout_s=10.0)
    assert trainer.step == 0 and trainer.interrupted_steps == 1  # the step was cut short, not waited for


def test_run_in_this_thread_admits_by_the_schedule_and_leaves_the_last_save_to_the_caller(trainer):
    trainer.cfg = trainer.cfg.updated({"checkpoint.period_steps": 2, "train.new_frames_per_step": 3})
    saves, admitted, steps = Saves(), [], []
    loop = TrainingLoop(trainer, LOG, save=saves, rate_cap=False, admit=admitted.append, check_divergence=True,
                        on_step=lambda stats: steps.append(stats.step))
    loop.run(until_step=4)
    assert trainer.step == 4 and steps == [1, 2, 3, 4]
    assert admitted == [2, 5, 8, 11]  # frames_before_step: a batch, then train.new_frames_per_step more per step
    assert saves.calls == ["period"]  # at step 2; step 4 is the caller's final save


def test_run_raises_when_the_loss_stays_non_finite(trainer, monkeypatch):
    monkeypatch.setattr(trainer, "train_step", lambda: setattr(trainer, "skipped_steps", trainer.skipped_steps + 1))
    with pytest.raises(LossDivergedError, match="10 steps in a row had a non-finite loss"):
        TrainingLoop(trainer, LOG, rate_cap=False, check_divergence=True).run(until_step=1)


def test_intake_keeps_its_share_of_the_keyframes(trainer):
    trainer.buffer.clear()
    intake = KeyframeIntake(trainer, KeyframeGate(min_interval_s=0.5, max_interval_s=5.0, motion_threshold=0.04),
                            keep=lambda k: k % 2 == 1)
    results = [intake.offer(i * 0.1, lambda i=i: frame(i)[0], lambda: frame(0)[1], ("mug",)) for i in range(12)]
    assert [i for i, r in enumerate(results) if r.accepted] == [5]  # keyframes 0, 5, 10: the second is ours
    assert [r.reason for r in results if r.reason == OTHER_SHARE] == [OTHER_SHARE] * 2 and len(trainer.buffer) == 1


def test_intake_gates_every_pair_and_buffers_keyframes(trainer):
    trainer.buffer.clear()
    intake = KeyframeIntake(trainer, KeyframeGate(min_interval_s=0.5, max_interval_s=5.0, motion_threshold=0.04))
    decoded = []

    def rgb(seed):
        def decode():
            decoded.append(seed)
            return frame(seed)[0]
        return decode

    results = [intake.offer(i * 0.1, rgb(i), lambda: frame(0)[1], ("mug",)) for i in range(12)]  # 10 Hz, 1.2 s
    accepted = [i for i, r in enumerate(results) if r.accepted]
    assert accepted == [0, 5, 10]  # first, then each 0.5 s on (random images: always "view changed")
    assert decoded == accepted  # frames that are too soon are never decoded
    assert intake.offered == 12 and intake.buffered == len(trainer.buffer) == 3 and intake.degenerate == 0


@pytest.mark.parametrize("depth, why", [(np.zeros((64, 80), np.float32), "no valid depth"),
                                        (np.full((64, 80), 2.0, np.float32), "every valid pixel")])
def test_intake_counts_and_leaves_out_degenerate_depth(trainer, depth, why):
    trainer.buffer.clear()
    intake = KeyframeIntake(trainer, KeyframeGate())
    result = intake.offer(0.0, lambda: frame(1)[0], lambda: depth, ("box",))
    assert not result.accepted and why in result.degenerate and intake.degenerate == 1
    assert len(trainer.buffer) == 0 and intake.buffered == 0  # DEAL would learn "no edges" from it


def test_step_control_attach_counts_hooks():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 1))
    handles = StepControl().attach(model)
    assert len(handles) == 3 + 4  # the Sequential and its two convs, four parameters


def test_segmenter_interrupt_stops_a_frame_in_flight(one_thread):
    cfg = tiny_cfg(**{"model.input_height": 480, "model.input_width": 640})
    segmenter = Segmenter(cfg, device="cpu")
    layers = []
    segmenter.model.backbone.features[0].register_forward_pre_hook(lambda module, inputs: layers.append(1))
    outcome = []

    def run():
        try:
            segmenter(np.zeros((480, 640, 3), np.uint8))
            outcome.append("done")
        except TrainingInterrupted:
            outcome.append("interrupted")

    worker = threading.Thread(target=run)
    worker.start()
    assert wait_for(lambda: layers, 30.0)
    segmenter.interrupt()
    worker.join(10.0)
    assert outcome == ["interrupted"]  # cut short: finishing the frame would have said "done"
