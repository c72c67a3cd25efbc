"""The one checkpoint format: safetensors (no pickle), written atomically, with a manifest in the metadata.

Tensors: ``model.<name>`` (the CAM network) and ``optim.<param index>.<key>`` (optimizer state).
Metadata (strings): format, step, classes, config JSON, architecture hash, optimizer hyper-parameters.
A reader polling the file never sees a torn write: the file is written beside the target, fsynced
and renamed over it (pitfalls.md 9).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from deal_ros.config import ARCHITECTURE_FIELDS, DealConfig

FORMAT = "deal_ros.checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, or does not fit the configured model; the message says why."""


@dataclass
class Checkpoint:
    config: DealConfig
    step: int
    model_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

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


def save_checkpoint(path: str | Path, model: torch.nn.Module, config: DealConfig, step: int,
                    optimizer: torch.optim.Optimizer | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Write model (+ optimizer) state atomically to `path`; the previous file stays intact on failure."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
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
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp_name, metadata=metadata)
        with open(tmp_name, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def load_checkpoint(path: str | Path, expected: DealConfig | None = None, device: str | torch.device = "cpu",
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
        config = DealConfig.from_dict(json.loads(metadata["config"]))
        step = int(metadata["step"])
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} has a damaged manifest: {exc}") from None
    if expected is not None:
        if list(config.classes) != list(expected.classes):
            raise CheckpointError(f"checkpoint {path} was trained for classes {config.classes}, "
                                  f"but the configuration has {expected.classes}")
        if config.architecture_hash() != expected.architecture_hash():
            detail = ", ".join(f"{k}: checkpoint {getattr(config.model, k)!r} vs config {getattr(expected.model, k)!r}"
                               for k in ARCHITECTURE_FIELDS if getattr(config.model, k) != getattr(expected.model, k))
            raise CheckpointError(f"checkpoint {path} has a different architecture ({detail})")
    model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    optimizer_state = None
    if "optimizer" in metadata:
        optim_meta = json.loads(metadata["optimizer"])
        optimizer_state = _unflatten_optimizer({k: v for k, v in tensors.items() if k.startswith("optim.")},
                                               optim_meta)
    return Checkpoint(config=config, step=step, model_state=model_state, optimizer_state=optimizer_state,
                      extra=json.loads(metadata.get("extra", "{}")))


def read_manifest(path: str | Path) -> dict[str, str]:
    """The metadata only (cheap: reads the header), e.g. to poll the step of a checkpoint for hot reload."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} is unreadable: {exc}") from None
