"""deal_ros.depth.filters.local_median: the comparator network equals torch.median over every window."""

import pytest
import torch
import torch.nn.functional as F

from deal_ros.depth.filters import _median_program, local_median


def median_by_unfold(x: torch.Tensor, window: int) -> torch.Tensor:
    """The straightforward reference: torch.median over the unfolded, replicate-padded windows."""
    b, c, h, w = x.shape
    pad = window // 2
    padded = F.pad(x.reshape(b * c, 1, h, w), (pad, pad, pad, pad), mode="replicate")
    return F.unfold(padded, kernel_size=window).median(dim=1).values.reshape(b, c, h, w)


@pytest.mark.parametrize("window", [1, 3, 5, 7, 9])
@pytest.mark.parametrize("shape", [(2, 3, 17, 23), (1, 1, 2, 3), (1, 2, 9, 1)])
def test_equals_torch_median(window, shape):
    gen = torch.Generator().manual_seed(window * 100 + shape[-1])
    continuous = torch.randn(shape, generator=gen)
    ties = torch.randint(0, 3, shape, generator=gen).float()  # many equal values
    for x in (continuous, ties, -ties.abs() * 1e-30):
        assert torch.equal(local_median(x, window), median_by_unfold(x, window))


def test_float64_and_non_contiguous_input():
    x = torch.randn(2, 16, 12, 4, dtype=torch.float64).permute(0, 3, 1, 2)  # (2, 4, 16, 12), non-contiguous
    assert torch.equal(local_median(x, 7), median_by_unfold(x.contiguous(), 7))


def test_window_7_network_is_pruned_and_proven():
    # Building runs the network on all 8^7 0-1 blocks with sorted columns (and raises if any is wrong).
    program = _median_program(7)
    assert 0 < len(program.ops) < 400  # 438 min/max before pruning never-swapping comparators
    assert program.num_slots <= 64


def test_even_window_is_refused():
    with pytest.raises(ValueError, match="odd"):
        local_median(torch.zeros(1, 1, 4, 4), 4)
