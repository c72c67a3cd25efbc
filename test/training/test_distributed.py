"""Multi-process training with torchrun (gloo, CPU): ranks stay in step, rank 0 alone writes, N = 1 = one process."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "io"))

from bagfactory import write_rgbd_bag

from deal_ros.lab.synthetic import make_tabletop_scenes
from deal_ros.storage.checkpoint import checkpoint_file, load_checkpoint
from deal_ros.training.distributed import JOB_VARIABLES, DistContext, DistributedError, GradientSync, join_job

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
    shares = [list(DistContext(r, 3, "gloo", torch.device("cpu"), 60.0).shard(range(11))) for r in range(3)]
    assert shares == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8]]


def test_two_processes_stay_in_step_write_one_checkpoint_and_resume(bag, tmp_path):
    out = tmp_path / "model"
    # new_frames_per_step=0: each rank takes in its whole share before the step, so the shares can be counted
    result = train(bag, out, "--steps", "1", "--checkpoint-every", "1", "--set", "train.new_frames_per_step=0",
                   processes=2)
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
    ctx = DistContext(rank, world, "gloo", torch.device("cpu"), 60.0)
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


# ------------------------------------------------------------------------------------------------
# A half-configured start and a rank that dies: one line, exit 2, never a hang

LAUNCH_HINT = "torchrun --nproc_per_node N -m deal_ros train"
PEER_TIMEOUT_S = 30
"""--peer-timeout of these tests: short, yet far above a tiny step or a start on a busy machine."""
MARGIN_S = 90
"""What a loaded 2-core machine may add to a deadline (start, torch import) before a test calls it a hang."""


def _rank_env(**variables: str) -> dict[str, str]:
    """This environment without any torchrun variable, plus `variables`."""
    env = {k: v for k, v in os.environ.items() if k not in JOB_VARIABLES}
    return {**env, "OMP_NUM_THREADS": "1", **variables}


def _rank_command(bag: Path, out: Path, *args: str, peer_timeout_s: float = PEER_TIMEOUT_S) -> list[str]:
    return [sys.executable, "-m", "deal_ros", "train", str(bag), "--out", str(out), *TINY,
            "--peer-timeout", str(peer_timeout_s), *args]


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("deal-ros train: error:")]


@pytest.mark.parametrize(("variables", "expected"), [
    ({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}, "RANK=0 WORLD_SIZE=2 LOCAL_RANK=0 set but MASTER_ADDR, "
                                                          "MASTER_PORT not"),
    ({"RANK": "0"}, "RANK=0 set but WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT not"),
    ({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"},
     "inconsistent RANK=2 WORLD_SIZE=2"),
    ({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}, "rank 0 of 2: the other ranks "
                                                                                      "did not join"),
    ({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1"}, "rank 1 of 2: rank 0 did not "
                                                                                      "open"),
], ids=["no-master", "rank-only", "rank-beyond-world", "no-peer-arrives", "no-rank-0"])
def test_a_half_configured_start_ends_in_one_line_within_the_peer_timeout(bag, tmp_path, variables, expected):
    if "MASTER_ADDR" in variables:
        variables = {"MASTER_PORT": str(_free_port()), **variables}
    out = tmp_path / "model"
    started = time.monotonic()
    result = subprocess.run(_rank_command(bag, out, "--steps", "2", peer_timeout_s=5), capture_output=True,
                            text=True, timeout=5 + MARGIN_S, env=_rank_env(**variables), check=False)
    elapsed = time.monotonic() - started
    assert result.returncode == 2, result.stderr[-3000:]
    errors = _error_lines(result.stderr)
    assert len(errors) == 1 and result.stderr.rstrip().endswith(errors[0]), result.stderr[-3000:]
    assert expected in errors[0] and LAUNCH_HINT in errors[0], errors[0]
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr
    assert not out.exists(), "a refused start created the output folder"
    assert elapsed < 5 + MARGIN_S


def test_a_local_rank_without_a_gpu_is_refused_with_the_launch_command(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    for name, value in {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1",
                        "MASTER_PORT": "29500"}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(DistributedError, match=r"LOCAL_RANK=1 has no GPU: this node has 1.*torchrun --nproc_per_node"):
        join_job("cuda", 5.0)


def _start_ranks(bag: Path, out: Path) -> list[subprocess.Popen]:
    """Two ranks of one job as torchrun would start them, training until killed, a checkpoint every 2 steps."""
    port = str(_free_port())
    return [subprocess.Popen(_rank_command(bag, out, "--steps", "100000", "--checkpoint-every", "2"),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             env=_rank_env(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank),
                                           MASTER_ADDR="127.0.0.1", MASTER_PORT=port))
            for rank in range(2)]


def _wait_for_checkpoint(out: Path, processes: list[subprocess.Popen]) -> None:
    """Until rank 0 has saved a periodic checkpoint (training is under way on both ranks)."""
    deadline = time.monotonic() + 300
    while not checkpoint_file(out).is_file():
        assert all(p.poll() is None for p in processes), "a rank ended before the first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.5)
    time.sleep(2)  # a few steps more


@pytest.mark.parametrize(("victim", "how", "cause"), [
    (1, signal.SIGKILL, "Connection"),
    (1, signal.SIGSTOP, "Timed out"),  # alive but stalled: only the peer timeout ends the wait
    (0, signal.SIGKILL, "Connection"),
], ids=["rank1-killed", "rank1-stalled", "rank0-killed"])
def test_a_rank_that_dies_mid_run_ends_the_other_in_one_line_and_the_checkpoint_loads(bag, tmp_path, victim, how,
                                                                                      cause):
    out = tmp_path / "model"
    ranks = _start_ranks(bag, out)
    try:
        _wait_for_checkpoint(out, ranks)
        survivor = ranks[1 - victim]
        os.kill(ranks[victim].pid, how)
        _, stderr = survivor.communicate(timeout=PEER_TIMEOUT_S + MARGIN_S)
    finally:
        for process in ranks:
            process.kill()
            process.communicate(timeout=60)
    assert survivor.returncode == 2, stderr[-3000:]
    errors = _error_lines(stderr)
    assert len(errors) == 1 and stderr.rstrip().endswith(errors[0]), stderr[-3000:]
    assert f"rank {1 - victim} of 2:" in errors[0] and cause in errors[0], errors[0]
    assert "another rank died or stalled for more than --peer-timeout 30 s" in errors[0], errors[0]
    assert "internal error" not in stderr and "Traceback" not in stderr
    saved = load_checkpoint(checkpoint_file(out))  # intact, whoever died
    assert saved.step >= 2
    if victim == 1:  # rank 0 saved the steps it trained before it ended, and says so
        assert f"the {saved.step} step(s) trained so far are saved in" in errors[0], errors[0]
        assert json.loads((out / "train_log.json").read_text())["status"] == "failed"


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (Linux /proc)."""
    children = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
    return children


def _rank_of(pid: int) -> str | None:
    variables = (Path("/proc") / str(pid) / "environ").read_bytes().split(b"\0")
    return next((v[5:].decode() for v in variables if v.startswith(b"RANK=")), None)


def test_a_torchrun_rank_killed_mid_run_ends_rank_0_in_one_line_and_the_checkpoint_loads(bag, tmp_path):
    out = tmp_path / "model"
    launcher = subprocess.Popen([str(TORCHRUN), "--standalone", "--nproc_per_node=2", *_rank_command(bag, out)[1:],
                                 "--steps", "100000", "--checkpoint-every", "2"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_rank_env(),
                                start_new_session=True)  # its ranks with it: killed together if the test fails
    try:
        _wait_for_checkpoint(out, [launcher])
        rank1 = next(pid for pid in _children(launcher.pid) if _rank_of(pid) == "1")
        os.kill(rank1, signal.SIGKILL)
        _, stderr = launcher.communicate(timeout=PEER_TIMEOUT_S + MARGIN_S)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(launcher.pid, signal.SIGKILL)
        launcher.communicate(timeout=60)
    assert launcher.returncode != 0
    errors = _error_lines(stderr)
    assert len(errors) == 1 and errors[0].startswith("deal-ros train: error: rank 0 of 2:"), stderr[-3000:]
    assert "deal_ros FAILED" in stderr  # torchrun's own report, naming rank 1 as the root cause
    assert load_checkpoint(checkpoint_file(out)).step >= 2
