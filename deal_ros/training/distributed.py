"""Multi-process training on torch.distributed: `torchrun --nproc_per_node N -m deal_ros train BAGS ...`.

Each process (rank) runs its own trainer on its own share of the frames (frame i goes to rank i % N), with the
configured batch per rank; after every backward pass the gradients are averaged over the ranks, so all ranks
take the same optimiser step and their weights stay identical. Backend NCCL on GPUs (one per rank, by
LOCAL_RANK), gloo on the CPU. Rank 0 alone writes checkpoints, logs and plots.

Why not the DistributedDataParallel wrapper: DDP waits in backward for every parameter that took part in the
forward pass, but the segmentation head gets a gradient only on steps with confident pseudo-labels (which
differ from rank to rank) and the structure losses' modules live outside the network; DDP would hang or fail
there. GradientSync does DDP's job explicitly instead (the same all-reduce average, buffers from rank 0 before
each forward, parameters from rank 0 at the start), and with N = 1 it changes nothing, bit for bit.

No rank waits for ever: joining the job and every collective give up after the peer timeout
(`deal-ros train --peer-timeout S`, 60 s by default), with one line that says which rank, what it
waited for and how to launch, so a half-configured start or a rank that died ends the others instead of
hanging them for torch's 30 minutes. A rank's SIGTERM (torchrun stops every rank when one fails) is handled
by the command's one handler (deal_ros.cli): `deal-ros train` ends the rank with one line, rank 0 saving first.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import os
import re
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from deal_ros.errors import DealRosError, one_line

LOG = logging.getLogger(__name__)
T = TypeVar("T")

RANK_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
"""Any of these set means a multi-process start (torchrun sets them all, with MASTER_ADDR and MASTER_PORT)."""
JOB_VARIABLES = (*RANK_VARIABLES, "MASTER_ADDR", "MASTER_PORT")
LAUNCH = ("launch with `torchrun --nproc_per_node N -m deal_ros train ...`, or unset "
          f"{', '.join(JOB_VARIABLES)} for one process")
BUCKET_ELEMENTS = 1 << 22
"""Gradients are all-reduced in flat buckets of about this many elements (16 MB of float32)."""


class DistributedError(DealRosError, RuntimeError):
    """The multi-process setup is unusable (bad torchrun variables, no GPU per rank, peers that never came)."""


class PeerLostError(DistributedError):
    """A collective failed mid-run: another rank died, or stalled past the peer timeout."""


@dataclass(frozen=True)
class DistContext:
    """This process's place in a torchrun job."""

    rank: int
    world_size: int
    backend: str
    device: torch.device
    timeout_s: float
    """The peer timeout: how long joining and each collective wait for the other ranks."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def owns(self, index: int) -> bool:
        """Whether item `index` of a stream is this rank's: items rank, rank + N, rank + 2N, ... (disjoint)."""
        return index % self.world_size == self.rank

    def shard(self, items: Iterable[T]) -> Iterator[T]:
        """This rank's share of a stream (see owns)."""
        for index, item in enumerate(items):
            if self.owns(index):
                yield item

    def agree(self, ok: bool) -> bool:
        """True only if `ok` on every rank (a collective: every rank must call it)."""
        flag = torch.tensor([1 if ok else 0], dtype=torch.int32, device=self.device)
        with self.collective("agreeing on a step"):
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item())

    def gather(self, value: Any) -> list[Any]:
        """`value` of every rank, in rank order (a collective)."""
        values: list[Any] = [None] * self.world_size
        with self.collective("gathering the ranks' counts"):
            dist.all_gather_object(values, value)
        return values

    def wait_for_all(self) -> None:
        """Return once every rank is here (a collective): ranks leave a finished job together, so none tears
        its connections down while another still uses them (a rank that left early aborted in gloo's teardown)."""
        with self.collective("waiting for the ranks to finish"):
            dist.barrier()

    def identical(self, tensors: Iterable[torch.Tensor]) -> bool:
        """Whether every rank holds bit-identical `tensors` (a collective): the check that ranks stayed in step."""
        digest = hashlib.sha256()
        for tensor in tensors:
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return len(set(self.gather(digest.hexdigest()))) == 1

    @contextmanager
    def collective(self, what: str) -> Iterator[None]:
        """Turns the backend's error of a collective (gloo: connection reset, or its timeout, which is the
        peer timeout) into a PeerLostError that names this rank and the likely cause."""
        try:
            yield
        except RuntimeError as exc:
            cause = one_line(re.sub(r"^\[[^\]]*\] ", "", str(exc)).split(". ")[0], 200)  # gloo: '[file:line] ...'
            raise PeerLostError(f"rank {self.rank} of {self.world_size}: {what} failed ({cause}): another rank "
                                f"died or stalled for more than --peer-timeout {self.timeout_s:g} s") from None


def join_job(requested_device: str, timeout_s: float) -> DistContext | None:
    """This process's DistContext when started as one rank of a job (RANK, WORLD_SIZE or LOCAL_RANK set), else None.

    A half-configured start (variables left over from another job, a script that sets some of them) is refused
    in one line naming the variables, and peers that do not arrive within `timeout_s` end it the same way.
    """
    if not any(name in os.environ for name in RANK_VARIABLES):
        return None
    return init_from_environment(requested_device, timeout_s)


def _job_environment() -> tuple[int, int, int, str, int]:
    """RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT, checked for presence and consistency."""
    given = " ".join(f"{name}={os.environ[name]}" for name in JOB_VARIABLES if name in os.environ)
    missing = [name for name in JOB_VARIABLES if not os.environ.get(name)]
    if missing:
        raise DistributedError(f"half-configured multi-process start: {given} set but {', '.join(missing)} not "
                               f"(one rank needs all of {', '.join(JOB_VARIABLES)}): {LAUNCH}")
    try:
        rank, world, local, port = (int(os.environ[name])
                                    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT"))
    except ValueError:
        raise DistributedError(f"RANK, WORLD_SIZE, LOCAL_RANK and MASTER_PORT must be integers, got {given}: "
                               f"{LAUNCH}") from None
    if world < 1 or not 0 <= rank < world or local < 0 or not 0 < port < 65536:
        raise DistributedError(f"inconsistent {given} (needs 0 <= RANK < WORLD_SIZE, LOCAL_RANK >= 0, "
                               f"MASTER_PORT in 1..65535): {LAUNCH}")
    return rank, world, local, os.environ["MASTER_ADDR"], port


def init_from_environment(requested_device: str, timeout_s: float) -> DistContext:
    """Join the job torchrun started (its RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT variables).

    requested_device: train.device; 'auto' or 'cuda' uses GPU LOCAL_RANK with NCCL (one GPU per rank on each
    node), 'cpu' (or no GPU with 'auto') uses gloo. timeout_s bounds the rendezvous and every later collective.
    """
    rank, world, local, address, port = _job_environment()
    use_cuda = requested_device.startswith("cuda") or (requested_device == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise DistributedError(f"train.device={requested_device!r} but CUDA is not available on this node")
        if local >= torch.cuda.device_count():
            raise DistributedError(f"LOCAL_RANK={local} has no GPU: this node has {torch.cuda.device_count()}; "
                                   "launch with `torchrun --nproc_per_node N -m deal_ros train ...`, N <= the "
                                   "number of GPUs, or --set train.device=cpu")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        where = f"MASTER_ADDR={address} MASTER_PORT={port}"
        if rank:
            _wait_for_rank0(address, port, timeout_s, f"rank {rank} of {world}: rank 0 did not open {where} "
                                                      f"within --peer-timeout {timeout_s:g} s: {LAUNCH}")
        try:
            dist.init_process_group(backend, rank=rank, world_size=world,
                                    timeout=datetime.timedelta(seconds=timeout_s))
        except (RuntimeError, ValueError) as exc:
            raise DistributedError(f"rank {rank} of {world}: the other ranks did not join at {where} within "
                                   f"--peer-timeout {timeout_s:g} s ({one_line(exc, 200)}): {LAUNCH}") from None
    LOG.info("rank %d of %d on %s (%s)", rank, world, device, backend)
    return DistContext(rank, world, backend, device, timeout_s)


def _wait_for_rank0(address: str, port: int, timeout_s: float, message: str) -> None:
    """Return once rank 0's store accepts connections, or raise DistributedError(message) after timeout_s: torch's
    own client retries for twice its timeout and logs a C++ stack for every try."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection((address, port), timeout=1.0).close()
            return
        except socket.gaierror as exc:
            raise DistributedError(f"MASTER_ADDR={address}: {exc.strerror}: {LAUNCH}") from None
        except OSError:
            if time.monotonic() >= deadline:
                raise DistributedError(message) from None
            time.sleep(0.2)


def shutdown(peer_lost: bool = False) -> None:
    """Leave the job (if joined). After a lost peer the process group is not torn down: gloo's teardown with a
    dead peer aborts the process ("terminate called without an active exception") after the one line was said;
    the process then ends without running C++ destructors (`exit_without_teardown`)."""
    global _ABANDONED
    if peer_lost and dist.is_initialized():
        _ABANDONED = True
    elif dist.is_initialized():
        dist.destroy_process_group()


_ABANDONED = False


def exit_without_teardown() -> bool:
    """Whether the process must end with os._exit: a job left with a lost peer (see shutdown)."""
    return _ABANDONED


class GradientSync:
    """Averages gradients over the ranks after backward and keeps buffers and parameters equal to rank 0's.

    parameters / buffers: callables, so that modules rebuilt at run time (structure losses) are followed.
    A parameter without a gradient on every rank stays without one (as in a single process); one with a
    gradient on some ranks only gets zeros on the others first, so every rank steps the same way.
    """

    def __init__(self, ctx: DistContext, parameters: Callable[[], Iterable[torch.nn.Parameter]],
                 buffers: Callable[[], Iterable[torch.Tensor]]) -> None:
        self.ctx = ctx
        self._parameters = parameters
        self._buffers = buffers

    def agree(self, ok: bool) -> bool:
        """A step is taken (finite loss) only when it is on every rank: a collective must never be skipped by one."""
        return self.ctx.agree(ok)

    def broadcast_parameters(self) -> None:
        """Everyone starts from rank 0's weights (and buffers), as DDP does when it wraps a model."""
        with self.ctx.collective("receiving rank 0's weights"):
            _broadcast([p.data for p in self._parameters()] + list(self._buffers()))

    def before_forward(self) -> None:
        """Rank 0's buffers (BatchNorm statistics of the trained heads) for every rank, as DDP does."""
        with self.ctx.collective("receiving rank 0's buffers"):
            _broadcast(list(self._buffers()))

    def after_backward(self) -> None:
        """grad <- mean over ranks of grad, for every parameter with a gradient on any rank."""
        params = [p for p in self._parameters() if p.requires_grad]
        if not params:
            return
        has_grad = torch.tensor([p.grad is not None for p in params], dtype=torch.uint8, device=self.ctx.device)
        with self.ctx.collective("averaging gradients"):
            dist.all_reduce(has_grad, op=dist.ReduceOp.MAX)
        synced = [p for p, flag in zip(params, has_grad.tolist(), strict=True) if flag]
        grads: list[torch.Tensor] = []
        for p in synced:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
        for bucket in _buckets(grads):
            flat = torch.cat([g.reshape(-1) for g in bucket])
            with self.ctx.collective("averaging gradients"):
                dist.all_reduce(flat)
            flat /= self.ctx.world_size
            _unflatten(flat, bucket)


def _buckets(tensors: list[torch.Tensor]) -> Iterator[list[torch.Tensor]]:
    """Consecutive tensors of one dtype and device, about BUCKET_ELEMENTS per bucket."""
    bucket: list[torch.Tensor] = []
    size = 0
    for tensor in tensors:
        kind = (tensor.dtype, tensor.device)
        if bucket and (size + tensor.numel() > BUCKET_ELEMENTS or kind != (bucket[0].dtype, bucket[0].device)):
            yield bucket
            bucket, size = [], 0
        bucket.append(tensor)
        size += tensor.numel()
    if bucket:
        yield bucket


def _broadcast(tensors: list[torch.Tensor]) -> None:
    """Rank 0's values into `tensors` on every rank, a few flat broadcasts instead of one per tensor."""
    by_kind: dict[tuple[torch.dtype, torch.device], list[torch.Tensor]] = {}
    for tensor in tensors:
        by_kind.setdefault((tensor.dtype, tensor.device), []).append(tensor)
    with torch.no_grad():
        for group in by_kind.values():
            for bucket in _buckets(group):
                flat = torch.cat([t.reshape(-1) for t in bucket])
                dist.broadcast(flat, src=0)
                _unflatten(flat, bucket)


def _unflatten(flat: torch.Tensor, tensors: list[torch.Tensor]) -> None:
    offset = 0
    for tensor in tensors:
        tensor.copy_(flat[offset: offset + tensor.numel()].view_as(tensor))
        offset += tensor.numel()


def attach(trainer: Any, ctx: DistContext) -> GradientSync:
    """Make `trainer` one rank of the job: its own data randomness, rank 0's weights, gradients averaged.

    Rank 0 keeps the trainer's seed (so N = 1 is the single-process run); rank r > 0 samples and augments
    with seed + r, so the ranks do not flip and crop their different frames alike.
    """
    seed = trainer.cfg.train.seed
    if ctx.rank:
        trainer.reseed_data(seed + ctx.rank)
    sync = GradientSync(
        ctx,
        parameters=lambda: [*trainer.model.parameters(), *trainer.structure.trainable_parameters()],
        buffers=lambda: [*trainer.model.buffers(), *trainer.structure.buffers()])
    sync.broadcast_parameters()
    trainer.sync = sync
    return sync
