"""deal_ros.lab.plots: figures are written atomically (a failed write keeps the previous file)."""

from __future__ import annotations

import errno
import os

import matplotlib.pyplot as plt
import pytest

from deal_ros.lab.plots import save_figure


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
