"""Start-up checks of the Python environment, before torch is imported by the core.

A ROS environment often lacks torch, has the wrong numpy for its cv_bridge, or silently has a
CPU-only torch build; the nodes call `check_environment` first and fail with a message that
says what to install instead of a traceback from deep inside an import.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from deal_ros.models import CAMNet


@dataclass
class EnvironmentReport:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    info: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


TORCH_HELP = ("install torch into the Python that ROS uses: x86 `pip install torch` (CUDA wheels from "
              "download.pytorch.org) in a venv created with --system-site-packages, or on Jetson the NVIDIA "
              "JetPack torch wheel; see README 'ROS 2 nodes' -> troubleshooting")


def check_environment(requested_device: str | None = None) -> EnvironmentReport:
    """Check numpy (< 2), opencv (< 5), torch and, when given, a device requested on the command line.

    Never raises. The parameter file's train.device is not known yet here: the nodes report the device
    they resolve with `device_notes` once their parameters are declared.
    """
    report = EnvironmentReport()
    report.info.append(f"python {sys.version.split()[0]} ({sys.executable})")
    try:
        numpy = importlib.import_module("numpy")
        major = int(numpy.__version__.split(".")[0])
        report.info.append(f"numpy {numpy.__version__}")
        if major >= 2:
            report.warnings.append(f"numpy {numpy.__version__}: ROS' cv_bridge is built against numpy 1 and may "
                                   "crash; deal_ros does not use cv_bridge, but other nodes in this process might "
                                   "(pip install 'numpy<2')")
    except ImportError as exc:
        report.errors.append(f"numpy is missing ({exc}): apt install python3-numpy")
    try:
        cv2 = importlib.import_module("cv2")
        report.info.append(f"opencv {cv2.__version__}")
        if int(cv2.__version__.split(".")[0]) >= 5:
            report.warnings.append("OpenCV 5 breaks cv_bridge (KeyError: 16): pip install 'opencv-python-headless<5'")
    except ImportError as exc:
        report.errors.append(f"opencv is missing ({exc}): apt install python3-opencv")
    try:
        torch = importlib.import_module("torch")
    except ImportError as exc:
        report.errors.append(f"torch is not importable ({exc}): {TORCH_HELP}")
        return report
    cuda = bool(torch.cuda.is_available())
    report.info.append(f"torch {torch.__version__} (CUDA build {torch.version.cuda}, CUDA available: {cuda})")
    if requested_device is not None and requested_device.startswith("cuda") and not cuda:
        report.errors.append(f"train.device '{requested_device}' requested but CUDA is not available to torch "
                             f"{torch.__version__} (CUDA build: {torch.version.cuda}); install a CUDA build of "
                             "torch or set train.device: cpu / auto")
    return report


def device_notes(requested_device: str, resolved_type: str) -> tuple[list[str], list[str]]:
    """(info lines, warning lines) about the device a node resolved from its train.device parameter.

    'auto' without CUDA is warned about by deal_ros.compute.device itself (routed into the ROS log).
    """
    if resolved_type != "cpu":
        return [], []
    if requested_device == "auto":
        return ["set train.device: cpu to say the CPU is intended, or cuda to make a missing GPU an error"], []
    return [f"train.device '{requested_device}': on the CPU as requested (seconds per training step)"], []


def weights_line(model: CAMNet) -> str:
    """The start-up line saying which weights the network starts from and whether its BatchNorm trains."""
    report = getattr(model, "load_report", None)
    source = f"weights: {report}" if report is not None else "weights: random init (model.pretrained_path '')"
    bn = "BatchNorm frozen (pretrained statistics)" if model.cfg.freeze_bn else "BatchNorm trains"
    return f"{source}; {bn}"
