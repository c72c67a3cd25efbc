"""Shared bag of the deal_ros.io.bag tests; test/io (bagfactory) on the import path."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bagfactory import write_rgbd_bag

TAG_CHANGE = [(0.0, "mug,box"), (1.05, "box")]


@pytest.fixture(scope="session", params=["sqlite3", "mcap"])
def bag(request, tmp_path_factory):
    """20 RealSense-like frames (sqlite3 and mcap), tags 'mug,box' then 'box' from 1.05 s, depth jitter 8 ms."""
    path = tmp_path_factory.mktemp(request.param) / "rgbd"
    return write_rgbd_bag(path, storage=request.param, tags_sequence=TAG_CHANGE, jitter_ms=8)
