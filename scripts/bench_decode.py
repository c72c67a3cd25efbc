#!/usr/bin/env python3
"""Benchmark: image decoding vs a plain memcpy of the same bytes, in the same run.

Same measurement as `deal-ros bench decode` (deal_ros.lab.benchmarks.bench_decode); kept for scripts
that call it by path. Target: the zero-copy decoders cost <= 2x memcpy; exit 1 above it.

    python scripts/bench_decode.py [--width 640 --height 480 --repeat 9]
"""

from __future__ import annotations

import sys

from deal_ros.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "decode", *sys.argv[1:]]))
