"""The one checkpoint format: safetensors (no pickle), written atomically, with a manifest in the metadata.

Tensors: ``model.<name>`` (the CAM network) and ``optim.<param index>.<key>`` (optimizer state).
Metadata (strings): format, step, classes, config JSON, architecture hash, optimizer hyper-parameters.
A reader polling the file never sees a torn write: the file is written beside the target, fsynced
and renamed over it. It is serialised in memory and written by deal_ros.storage.files itself:
safetensors' save_file writes through a temporary of its own (.tmpXXXXXX) that a killed process leaves.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from deal_ros.config import ARCHITECTURE_FIELDS, DealRosConfig
from deal_ros.errors import DealRosError
from deal_ros.storage.files import atomic_write, remove_stale_temp_files

LOG = logging.getLogger("deal_ros.storage.checkpoint")

FORMAT = "deal_ros.storage.checkpoint/1"
MAX_LISTED = 3
"""Tensor names listed in a state-dict mismatch message (the rest are counted)."""
MAX_WEIGHT_ABS = 1e12
"""Larger weights mean training diverged (the next forward pass turns them into NaN); no sane network has them."""


CHECKPOINT_NAME = "model.safetensors"


def checkpoint_file(directory: str | Path) -> Path:
    """The checkpoint of a run: <directory>/model.safetensors, with `~` expanded (launch files pass ~/.ros/...)."""
    return Path(directory).expanduser() / CHECKPOINT_NAME


class CheckpointError(DealRosError, ValueError):
    """A checkpoint is missing, corrupt, or does not fit the configured model; the message says why."""


class NonFiniteWeightsError(CheckpointError):
    """Diverged weights (NaN, infinity or beyond MAX_WEIGHT_ABS): refused, so they never replace a good checkpoint."""


@dataclass
class Checkpoint:
    config: DealRosConfig
    step: int
    model_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    optimizer_type: str | None = None
    """Class name of the optimizer whose state this is (AdamW, SGD); None without optimizer state."""

    @property
    def classes(self) -> list[str]:
        return list(self.config.classes)


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, param_state in state["state"].items():
        for key, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = value
    for index, scalars in meta["scalars"].items():
        state.setdefault(int(index), {}).update(scalars)
    return {"state": state, "param_groups": meta["param_groups"]}


def any_tensor_diverged(tensors: Iterable[torch.Tensor]) -> bool:
    """Whether any floating-point tensor holds NaN, infinity or |value| > MAX_WEIGHT_ABS: one reduction and one
    host sync for the whole model (checked after every training step), where diverged_tensors syncs per tensor."""
    peaks = [t.detach().abs().amax() for t in tensors if t.is_floating_point() and t.numel()]
    return bool(peaks) and not bool(torch.stack(peaks).max() <= MAX_WEIGHT_ABS)  # NaN compares False


def diverged_tensors(state: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors of a state dict that hold NaN, infinity or |value| > MAX_WEIGHT_ABS."""
    return [name for name, t in state.items()
            if t.is_floating_point() and t.numel() and not bool(t.detach().abs().max() <= MAX_WEIGHT_ABS)]


def save_checkpoint(path: str | Path, model: torch.nn.Module, config: DealRosConfig, step: int,
                    optimizer: torch.optim.Optimizer | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Write model (+ optimizer) state atomically to `path`; the previous file stays intact on failure.

    Diverged weights are refused (NonFiniteWeightsError) before anything is written. I/O failures
    are OSErrors naming the file (the caller may retry or write elsewhere: deal_ros.storage.files). What a killed
    save left in the folder (by any process: the trainer node, `deal-ros train`) is removed first.
    """
    from safetensors.torch import save

    path = Path(path)
    state = model.state_dict()
    bad = diverged_tensors(state)
    if bad:
        kept = f"the checkpoint there (step {_step_of(path)}) is kept" if path.is_file() else "nothing was written"
        raise NonFiniteWeightsError(
            f"refusing to save diverged weights (NaN, inf or > {MAX_WEIGHT_ABS:g} in {len(bad)} tensor(s), e.g. "
            f"{bad[0]}) at step {step} to {path}; {kept}")
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in remove_stale_temp_files(path.parent):
        LOG.info("removed %s, left by a save that was killed", stale)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in state.items()}
    metadata = {
        "format": FORMAT,
        "step": str(int(step)),
        "classes": json.dumps(list(config.classes)),
        "config": config.to_json(),
        "architecture": config.architecture_hash(),
        "extra": json.dumps(extra or {}),
    }
    if optimizer is not None:
        optim_tensors, optim_meta = _flatten_optimizer(optimizer.state_dict())
        tensors.update(optim_tensors)
        metadata["optimizer"] = json.dumps({"type": type(optimizer).__name__, **optim_meta})

    data = with_sorted_metadata(save(tensors, metadata=metadata))
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def with_sorted_metadata(data: bytes) -> bytes:
    """The safetensors file `data` with its metadata keys in sorted order, tensors and their bytes unchanged.

    safetensors writes the metadata in hash order, which changes from process to process: without this,
    two saves of bit-identical weights with the same metadata differ in their bytes (and checksums).
    """
    header_len = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + header_len])
    header["__metadata__"] = dict(sorted(header.get("__metadata__", {}).items()))
    ordered = {"__metadata__": header.pop("__metadata__"), **header}
    text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)  # the data start stays 8-byte aligned, as safetensors writes it
    return len(text).to_bytes(8, "little") + text + data[8 + header_len:]


def _step_of(path: Path) -> str:
    """The step in a checkpoint's manifest, for messages ('?' when unreadable)."""
    try:
        return read_manifest(path).get("step", "?")
    except CheckpointError:
        return "?"


def estimate_checkpoint_bytes(model: torch.nn.Module, optimizer: str) -> int:
    """About how large a checkpoint of `model` trained with `optimizer` ('adamw', 'sgd') will be, in bytes."""
    state_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    slots = 2 if optimizer == "adamw" else 1  # AdamW: exp_avg, exp_avg_sq; SGD: momentum buffer
    return state_bytes + slots * trainable + 1_000_000  # + manifest (the config JSON) and headers


def load_model_state(model: torch.nn.Module, state: dict[str, torch.Tensor], path: str | Path) -> None:
    """model.load_state_dict(state), with a short message naming the first mismatches when it does not fit."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs model {tuple(v.shape)}"
              for k, v in own.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    parts = []
    for label, names in (("missing", missing), ("unexpected", unexpected), ("of another shape", shapes)):
        if names:
            more = f", ... ({len(names) - MAX_LISTED} more)" if len(names) > MAX_LISTED else ""
            parts.append(f"{len(names)} tensor(s) {label}: {', '.join(names[:MAX_LISTED])}{more}")
    if parts:
        raise CheckpointError(f"checkpoint {path} does not fit the model ({'; '.join(parts)}); "
                              "was it written by another deal_ros version or for another model?")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"checkpoint {path} does not fit the model: {first[:300]}") from None


def load_checkpoint(path: str | Path, expected: DealRosConfig | None = None, device: str | torch.device = "cpu",
                    ) -> Checkpoint:
    """Read a checkpoint; with `expected`, refuse one whose classes or architecture differ (saying which)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises several types for truncated/corrupt files
        raise CheckpointError(f"checkpoint {path} is unreadable (truncated or not safetensors): {exc}") from None
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a deal_ros checkpoint (format {metadata.get('format')!r}, "
                              f"expected {FORMAT!r}); to load ImageNet backbone weights use model.pretrained_path")
    try:
        config = DealRosConfig.from_dict(json.loads(metadata["config"]))
        step = int(metadata["step"])
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} has a damaged manifest: {exc}") from None
    if expected is not None:
        if list(config.classes) != list(expected.classes):
            raise CheckpointError(f"checkpoint {path} was trained for classes {config.classes}, "
                                  f"but the configuration has {expected.classes}")
        if config.architecture_hash() != expected.architecture_hash():
            ours, theirs = config.model.architecture(), expected.model.architecture()
            detail = ", ".join(f"{k}: checkpoint {ours[k]!r} vs config {theirs[k]!r}"
                               for k in ARCHITECTURE_FIELDS if ours[k] != theirs[k])
            raise CheckpointError(f"checkpoint {path} has a different architecture ({detail})")
    model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    optimizer_state = None
    optimizer_type = None
    if "optimizer" in metadata:
        optim_meta = json.loads(metadata["optimizer"])
        optimizer_type = optim_meta.get("type")
        optimizer_state = _unflatten_optimizer({k: v for k, v in tensors.items() if k.startswith("optim.")},
                                               optim_meta)
    return Checkpoint(config=config, step=step, model_state=model_state, optimizer_state=optimizer_state,
                      extra=json.loads(metadata.get("extra", "{}")), optimizer_type=optimizer_type)


def read_manifest(path: str | Path) -> dict[str, str]:
    """The metadata only (cheap: reads the header), e.g. to poll the step of a checkpoint for hot reload."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} is unreadable: {exc}") from None
