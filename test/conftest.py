"""Shared fixtures: devices to run on, and the real data in ../shared/data (skipped with a reason where absent)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

torch.set_num_threads(2)

DEVICES = [pytest.param("cpu", id="cpu"),
           pytest.param("cuda", id="cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                    reason="CUDA not available"))]


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> torch.device:
    """Every device the test can run on here (the CPU; CUDA where present), as kornia's tests do."""
    return torch.device(request.param)


@pytest.fixture
def one_thread():
    """Tiny tensors: intra-op threads only add overhead (10x on a loaded 2-core runner)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _shared(sub: str) -> Path:
    path = SHARED_DATA / sub
    if not path.exists():
        pytest.skip(f"real data not found at {path} (clone the repo beside ../shared)")
    return path


@pytest.fixture(scope="session")
def mobilenet_weights() -> Path:
    """Real ImageNet MobileNetV2 weights with torchvision names (see its README)."""
    return _shared("mobilenet_v2_imagenet") / "mobilenet_v2_imagenet.safetensors"


@pytest.fixture(scope="session")
def apc_scene() -> Path:
    """15 real RealSense RGB-D frames of a shelf bin (rotated-uint16 depth, see its README)."""
    return _shared("apc2016_shelf_sample") / "scene-0000"


@pytest.fixture(scope="session")
def ycbv_sample() -> Path:
    """81 real YCB-Video RGB-D frames as a bag (bag/) with ground-truth class masks (gt/), see its README."""
    return _shared("ycbv_real_sample")


@pytest.fixture(scope="session")
def imagenet_labels() -> list[str]:
    path = _shared("mobilenet_v2_imagenet_tflite") / "imagenet_labels.txt"
    return path.read_text().splitlines()
