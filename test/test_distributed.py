"""Multi-process training with torchrun (gloo, CPU): ranks stay in step, rank 0 alone writes, N = 1 = one process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent / "io"))

from bagfactory import write_rgbd_bag

from deal_ros.distributed import DistContext, GradientSync
from deal_ros.synthetic import make_tabletop_scenes

pytestmark = pytest.mark.slow  # end-to-end: `pytest -m "not slow"` is the fast loop

NUM_FRAMES = 10
SIZE = (48, 64)
TINY = ["--set", "model.input_height=32", "--set", "model.input_width=48", "--set", "train.batch_size=2",
        "--set", "train.device=cpu", "--set", "model.seg_head_channels=8", "--set", "loss.seg_warmup_steps=0",
        "--set", "loss.deal.warmup_steps=0", "--tags", "mug,box"]
TORCHRUN = Path(sys.executable).with_name("torchrun")


@pytest.fixture(scope="module")
def bag(tmp_path_factory) -> Path:
    scenes = make_tabletop_scenes(NUM_FRAMES, *SIZE, ["mug", "box"], seed=2)
    written = write_rgbd_bag(tmp_path_factory.mktemp("ddp") / "bag", storage="mcap", num_frames=NUM_FRAMES,
                             size=SIZE, frames=[(s.rgb, s.depth_m) for s in scenes], jitter_ms=2.0, seed=2)
    return written.path


def train(bag: Path, out: Path, *args: str, processes: int) -> subprocess.CompletedProcess:
    """`deal-ros train` as a user runs it: plain (processes=0) or under torchrun with that many processes."""
    launcher = [str(TORCHRUN), "--standalone", f"--nproc_per_node={processes}"] if processes else [sys.executable]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # torchrun sets 1 for N > 1; the same everywhere for N = 1
    result = subprocess.run([*launcher, "-m", "deal_ros", "train", str(bag), "--out", str(out), *TINY, *args],
                            capture_output=True, text=True, timeout=600, env=env, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def test_shares_are_disjoint_and_cover_every_frame():
    shares = [list(DistContext(r, 3, r, "gloo", torch.device("cpu"), 60.0).shard(range(11))) for r in range(3)]
    assert shares == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8]]


def test_two_processes_stay_in_step_write_one_checkpoint_and_resume(bag, tmp_path):
    out = tmp_path / "model"
    result = train(bag, out, "--steps", "1", "--checkpoint-every", "1", processes=2)
    assert "2 processes (gloo)" in result.stdout, result.stdout
    assert "weights identical on all ranks: True" in result.stdout, result.stdout
    log = json.loads((out / "train_log.json").read_text())
    assert log["world_size"] == 2 and log["weights_identical_across_ranks"] is True
    assert len(log["frames_per_rank"]) == 2 and min(log["frames_per_rank"]) > 0
    assert sum(log["frames_per_rank"]) == log["read"]["frames"] == NUM_FRAMES  # disjoint shares of all frames
    assert sorted(p.name for p in out.iterdir()) == ["loss_curves.png", "model.safetensors", "train_log.json"]

    train(bag, out, "--steps", "2", "--resume", processes=2)
    log = json.loads((out / "train_log.json").read_text())
    assert log["resumed_from_step"] == 1 and [h["step"] for h in log["history"]] == [1, 2]
    assert log["weights_identical_across_ranks"] is True


def test_one_process_under_torchrun_equals_the_plain_run(bag, tmp_path):
    train(bag, tmp_path / "plain", "--steps", "2", processes=0)
    train(bag, tmp_path / "torchrun", "--steps", "2", processes=1)
    plain = load_file(str(tmp_path / "plain" / "model.safetensors"))
    under_torchrun = load_file(str(tmp_path / "torchrun" / "model.safetensors"))
    assert plain.keys() == under_torchrun.keys()
    assert all(torch.equal(plain[k], under_torchrun[k]) for k in plain), "N = 1 changed the weights"
    log = json.loads((tmp_path / "torchrun" / "train_log.json").read_text())
    assert log["world_size"] == 1 and log["frames_per_rank"] == [NUM_FRAMES]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sync_rank(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(rank)  # different initial weights: broadcast_parameters makes them rank 0's
    used, on_rank1, unused = torch.nn.Linear(3, 2), torch.nn.Linear(3, 1), torch.nn.Linear(3, 1)
    modules = [used, on_rank1, unused]
    ctx = DistContext(rank, world, rank, "gloo", torch.device("cpu"), 60.0)
    sync = GradientSync(ctx, lambda: [p for m in modules for p in m.parameters()], lambda: [])
    sync.broadcast_parameters()
    x = torch.full((4, 3), float(rank + 1))
    loss = used(x).sum() + (on_rank1(x).sum() if rank == 1 else 0.0)
    loss.backward()
    sync.after_backward()
    torch.save({name: (p.detach().clone(), None if p.grad is None else p.grad.clone())
                for m, tag in zip(modules, ("used", "on_rank1", "unused"), strict=True)
                for name, p in ((f"{tag}.{n}", p) for n, p in m.named_parameters())}, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


def test_gradient_sync_averages_gradients_over_ranks(tmp_path):
    mp.spawn(_sync_rank, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for name in ranks[0]:
        (w0, g0), (w1, g1) = ranks[0][name], ranks[1][name]
        assert torch.equal(w0, w1), name  # rank 0's weights everywhere
        if name.startswith("unused"):
            assert g0 is None and g1 is None  # no gradient anywhere: stays None, as in one process
            continue
        assert torch.equal(g0, g1), name
    # d(sum(W x + b))/dW = sum over the batch of x = 4 (rank + 1): mean over the ranks 4 * 1.5 = 6
    torch.testing.assert_close(ranks[0]["used.weight"][1], torch.full((2, 3), 6.0))
    torch.testing.assert_close(ranks[0]["used.bias"][1], torch.full((2,), 4.0))
    # a gradient on rank 1 only (8 per entry): zeros on rank 0, so the mean is 4
    torch.testing.assert_close(ranks[0]["on_rank1.weight"][1], torch.full((1, 3), 4.0))
