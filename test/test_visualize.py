"""deal_ros.visualize: figures and PNGs are written atomically (a failed write keeps the previous file)."""

from __future__ import annotations

import errno
import os

import matplotlib
import numpy as np
import pytest

from deal_ros.visualize import save_figure, save_png

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def test_a_figure_that_cannot_be_written_keeps_the_previous_picture(tmp_path) -> None:
    """Plots were written in place: a full disk left half a PNG."""
    path = tmp_path / "quality.png"
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    save_figure(fig, path)
    before = path.read_bytes()
    assert before.startswith(b"\x89PNG")

    fig, _ = plt.subplots()
    real_savefig = fig.savefig

    def full_disk(target, **kwargs):
        real_savefig(target, **kwargs)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    fig.savefig = full_disk
    with pytest.raises(OSError) as info:
        save_figure(fig, path)
    assert info.value.filename == str(path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["quality.png"]
    assert not plt.fignum_exists(fig.number)


def test_save_png_writes_rgb(tmp_path) -> None:
    import cv2

    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[..., 0] = 200  # red
    save_png(tmp_path / "o.png", rgb)
    assert cv2.imread(str(tmp_path / "o.png"))[0, 0].tolist() == [0, 0, 200]
    assert [p.name for p in tmp_path.iterdir()] == ["o.png"]
