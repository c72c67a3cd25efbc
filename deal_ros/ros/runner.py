"""The executables' main: environment checks before torch is imported, then the nodes, a clean stop.

`trainer_node`, `segmenter_node` and `onboard` (both in one process) start here. The node modules, and
with them torch and cv2, are imported only after `check_environment` has said what is missing (a ROS
environment often lacks torch or has the wrong numpy for its cv_bridge).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, NoReturn

from deal_ros.errors import DealRosError
from deal_ros.online.startup import check_environment

if TYPE_CHECKING:
    from deal_ros.ros.rgbd_node import RGBDNode


def run_nodes(build: Callable[[], list[RGBDNode]], argv: list[str] | None = None) -> int:
    """Shared main: environment check before torch is used, rclpy init, spin, clean stop on SIGINT/SIGTERM.

    rclpy's own signal handler would invalidate the context at once, under the feet of the worker threads
    (publishing, "context is invalid"); ours only asks the spin loop to stop. Then every node's workers are
    told to stop together (a training step ends at its next layer), the last checkpoint is written, and
    only then is the context shut down. Repeated signals change nothing (a terminal's Ctrl-C reaches the node
    twice under `ros2 launch`: directly and forwarded); launch's SIGKILL escalation is the hard stop.
    A signal while starting (imports, the environment check, building the nodes: seconds) interrupts the start
    at once; a trainer already built saves what it trained. The handler is set before rclpy is imported.
    """
    stop = threading.Event()
    running = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if running.is_set() or stop.is_set():
            stop.set()  # running: the spin loop stops; a repeated signal changes nothing
            return
        stop.set()
        raise KeyboardInterrupt  # still starting: stop starting now (once: the next signal lands in cleanup)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return _run(build, argv, stop, running)
    except BaseException:
        if not stop.is_set() or running.is_set():
            raise
        # interrupted while starting; inside a C extension's import the interrupt comes out as an ImportError
        sys.stderr.write("deal_ros: interrupted while starting\n")
        return 0
    finally:
        for sig, handler in previous.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(sig, handler)


def _run(build: Callable[[], list[RGBDNode]], argv: list[str] | None, stop: threading.Event,
         running: threading.Event) -> int:
    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    from deal_ros.ros import _rclpy_util as ru

    rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
    ru.route_python_logging()
    logger = rclpy.logging.get_logger("deal_ros")
    nodes: list[RGBDNode] = []
    executor = None
    try:
        report = check_environment(_requested_device(argv))
        for line in report.info:
            logger.info(line)
        for line in report.warnings:
            logger.warning(line)
        if not report.ok:
            for line in report.errors:
                logger.fatal(line)
            return 1
        try:
            nodes = build()
        except DealRosError as exc:  # bad parameters, no such device, an unusable weights file
            logger.fatal(f"cannot start: {exc}")
            return 1
        running.set()
        executor = MultiThreadedExecutor(num_threads=4)
        for node in nodes:
            executor.add_node(node)
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
        logger.info("stopping")
    finally:
        started = time.monotonic()
        for node in nodes:
            node.request_stop()
        for node in reversed(nodes):
            node.shutdown()
        if executor is not None:
            executor.shutdown(timeout_sec=1.0)
        for node in nodes:
            node.destroy_node()
        stuck = [t.name for t in threading.enumerate() if t.name.startswith("deal_") and t.is_alive()]
        if nodes:
            logger.info(f"stopped in {time.monotonic() - started:.2f} s")
        if stuck:
            logger.warning(f"{stuck} did not stop in time; leaving without waiting for them")
        rclpy.try_shutdown()
    return 0


def leave(code: int) -> NoReturn:
    """End the process now that everything is saved and closed: flush, then skip the interpreter's teardown.

    Python's finalization of torch, DDS and the rest took 2-3 s after a stop that itself took 0.02 s (so
    `ros2 launch` waited past its grace period), and exiting while a stuck worker is inside a torch op
    aborts the process (std::terminate). Nothing is lost: the checkpoint is written and the files closed.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _requested_device(argv: list[str] | None) -> str | None:
    """train.device given on the command line (-p train.device:=cuda) for the early check; else None."""
    args = sys.argv if argv is None else argv
    for arg in args:
        if arg.startswith("train.device:="):
            return arg.split(":=", 1)[1]
    return None


def _trainer() -> list[RGBDNode]:
    from deal_ros.ros.trainer_node import TrainerNode

    return [TrainerNode()]


def _segmenter() -> list[RGBDNode]:
    from deal_ros.ros.segmenter_node import SegmenterNode

    return [SegmenterNode()]


def _onboard() -> list[RGBDNode]:
    from deal_ros.ros.onboard import build_onboard

    return build_onboard()


def trainer_main(argv: list[str] | None = None) -> NoReturn:
    leave(run_nodes(_trainer, argv))


def segmenter_main(argv: list[str] | None = None) -> NoReturn:
    leave(run_nodes(_segmenter, argv))


def onboard_main(argv: list[str] | None = None) -> NoReturn:
    leave(run_nodes(_onboard, argv))
