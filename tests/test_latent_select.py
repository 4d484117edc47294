"""harness.latent.select: the w×w sliding window against a brute-force numpy reference and a hand
computation; top-k bookkeeping."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.latent.select import gather_positions, mark_used, sliding_window, top_k_positions


def _numpy_window(grid: np.ndarray, w: int) -> tuple[np.ndarray, int, int]:
    h, width = grid.shape
    sums = np.array([[grid[r:r + w, c:c + w].sum() for c in range(width - w + 1)] for r in range(h - w + 1)])
    r, c = np.unravel_index(np.argmax(sums), sums.shape)  # first maximum in row-major order
    return sums, int(r), int(c)


def test_sliding_window_by_hand():
    grid = torch.tensor([[[1., 0., 0., 0.],
                          [0., 2., 3., 0.],
                          [0., 1., 4., 0.]]])
    chosen = sliding_window(grid, 2)
    # 2x2 sums: row 0: 3, 5, 3; row 1: 3, 10, 7 -> the window at (1, 1).
    assert chosen.pooled[0].tolist() == [[3., 5., 3.], [3., 10., 7.]]
    assert (chosen.row.item(), chosen.col.item()) == (1, 1)
    assert chosen.index[0].tolist() == [5, 6, 9, 10]  # cells (1,1) (1,2) (2,1) (2,2), row-major


@pytest.mark.parametrize("shape,w", [((4, 6, 7), 3), ((2, 5, 5), 1), ((3, 4, 9), 4), ((1, 6, 6), 6)])
def test_sliding_window_matches_numpy(shape, w):
    grid = torch.rand(*shape, generator=torch.Generator().manual_seed(sum(shape) + w))
    chosen = sliding_window(grid, w)
    for b in range(shape[0]):
        sums, r, c = _numpy_window(grid[b].double().numpy(), w)
        np.testing.assert_allclose(chosen.pooled[b].numpy(), sums, rtol=0, atol=1e-5)
        assert (chosen.row[b].item(), chosen.col[b].item()) == (r, c)
        cells = [(i // shape[2], i % shape[2]) for i in chosen.index[b].tolist()]
        assert cells == [(r + i, c + j) for i in range(w) for j in range(w)]


def test_sliding_window_ties_go_to_the_first_window_and_bad_sizes_are_refused():
    chosen = sliding_window(torch.ones(1, 3, 3, dtype=torch.bfloat16), 2)
    assert (chosen.row.item(), chosen.col.item()) == (0, 0)
    with pytest.raises(ValueError, match="does not fit"):
        sliding_window(torch.ones(1, 3, 3), 4)
    with pytest.raises(ValueError, match=r"\[B, H, W\]"):
        sliding_window(torch.ones(3, 3), 2)


def test_top_k_bookkeeping():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.7]])
    available = torch.tensor([[True, True, False, True]])
    index, valid = top_k_positions(scores, available, 2)
    assert index.tolist() == [[1, 3]] and valid.all()
    left = mark_used(available, index, valid)
    assert left.tolist() == [[True, False, False, False]]
    embeds = torch.arange(8.).reshape(1, 4, 2)
    assert gather_positions(embeds, index).tolist() == [[[2., 3.], [6., 7.]]]
