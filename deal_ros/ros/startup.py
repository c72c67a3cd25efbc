"""Start-up checks of the Python environment, before torch is imported by the core (pitfalls 3, 4, 7).

A ROS environment often lacks torch, has the wrong numpy for its cv_bridge, or silently has a
CPU-only torch build; the nodes call `check_environment` first and fail with a message that
says what to install instead of a traceback from deep inside an import.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass, field


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


def check_environment(requested_device: str = "auto") -> EnvironmentReport:
    """Check numpy (< 2), opencv (< 5), torch and the requested device; never raises."""
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
    if requested_device.startswith("cuda") and not cuda:
        report.errors.append(f"train.device '{requested_device}' requested but CUDA is not available to torch "
                             f"{torch.__version__} (CUDA build: {torch.version.cuda}); install a CUDA build of "
                             "torch or set train.device: cpu / auto")
    elif requested_device == "auto" and not cuda:
        report.warnings.append("no CUDA device: running on the CPU (training and inference will be slow); set "
                               "train.device: cuda to make this an error")
    return report
