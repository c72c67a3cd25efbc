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
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from deal_ros.errors import DealRosError

LOG = logging.getLogger(__name__)
T = TypeVar("T")

TIMEOUT = datetime.timedelta(minutes=10)
"""How long a rank waits for the others at a collective before failing (not hanging for ever)."""
BUCKET_ELEMENTS = 1 << 22
"""Gradients are all-reduced in flat buckets of about this many elements (16 MB of float32)."""


class DistributedError(DealRosError, RuntimeError):
    """The multi-process setup is unusable (bad torchrun variables, no GPU per rank)."""


@dataclass(frozen=True)
class DistContext:
    """This process's place in a torchrun job."""

    rank: int
    world_size: int
    local_rank: int
    backend: str
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, items: Iterable[T]) -> Iterator[T]:
        """This rank's share of a stream: items rank, rank + N, rank + 2N, ... (disjoint across ranks)."""
        for index, item in enumerate(items):
            if index % self.world_size == self.rank:
                yield item

    def agree(self, ok: bool) -> bool:
        """True only if `ok` on every rank (a collective: every rank must call it)."""
        flag = torch.tensor([1 if ok else 0], dtype=torch.int32, device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item())

    def gather(self, value: Any) -> list[Any]:
        """`value` of every rank, in rank order (a collective)."""
        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def wait_for_all(self) -> None:
        """Return once every rank is here (a collective): ranks leave a finished job together, so none tears
        its connections down while another still uses them (a rank that left early aborted in gloo's teardown)."""
        dist.barrier()

    def identical(self, tensors: Iterable[torch.Tensor]) -> bool:
        """Whether every rank holds bit-identical `tensors` (a collective): the check that ranks stayed in step."""
        digest = hashlib.sha256()
        for tensor in tensors:
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return len(set(self.gather(digest.hexdigest()))) == 1


def join_job(requested_device: str) -> DistContext | None:
    """This process's DistContext when torchrun started it (its variables are set), else None."""
    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
        return None
    return init_from_environment(requested_device)


def init_from_environment(requested_device: str) -> DistContext:
    """Join the job torchrun started (its RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT variables).

    requested_device: train.device; 'auto' or 'cuda' uses GPU LOCAL_RANK with NCCL (one GPU per rank on each
    node), 'cpu' (or no GPU with 'auto') uses gloo.
    """
    try:
        rank, world, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    except (KeyError, ValueError) as exc:
        raise DistributedError(f"torchrun variables RANK, WORLD_SIZE, LOCAL_RANK are missing or bad: {exc}") from None
    use_cuda = requested_device.startswith("cuda") or (requested_device == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise DistributedError(f"train.device={requested_device!r} but CUDA is not available on this node")
        if local >= torch.cuda.device_count():
            raise DistributedError(f"LOCAL_RANK {local} has no GPU: this node has {torch.cuda.device_count()}; "
                                   "give --nproc_per_node <= the number of GPUs")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, rank=rank, world_size=world, timeout=TIMEOUT)
    LOG.info("rank %d of %d on %s (%s)", rank, world, device, backend)
    return DistContext(rank, world, local, backend, device)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


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
        _broadcast([p.data for p in self._parameters()] + list(self._buffers()))

    def before_forward(self) -> None:
        """Rank 0's buffers (BatchNorm statistics of the trained heads) for every rank, as DDP does."""
        _broadcast(list(self._buffers()))

    def after_backward(self) -> None:
        """grad <- mean over ranks of grad, for every parameter with a gradient on any rank."""
        params = [p for p in self._parameters() if p.requires_grad]
        if not params:
            return
        has_grad = torch.tensor([p.grad is not None for p in params], dtype=torch.uint8, device=self.ctx.device)
        dist.all_reduce(has_grad, op=dist.ReduceOp.MAX)
        synced = [p for p, flag in zip(params, has_grad.tolist(), strict=True) if flag]
        grads: list[torch.Tensor] = []
        for p in synced:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
        for bucket in _buckets(grads):
            flat = torch.cat([g.reshape(-1) for g in bucket])
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
