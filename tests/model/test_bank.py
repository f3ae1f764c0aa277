"""The memory bank search against a float64 brute force on tiny tensors: fused kernel and torch, leave-out."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inspector.model import nearest
from inspector.model.bank import MemoryBank, bank_maps, bank_search

REL_TOL = 1e-4


def _ref(query: np.ndarray, rows: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Float64 distance from each query row to its nearest allowed bank row."""
    cand = rows[allowed]
    return np.asarray(np.sqrt(((query[:, None, :] - cand[None, :, :]) ** 2).sum(2)).min(1))


def _bank(seed: int, counts: list[int], c: int) -> tuple[np.ndarray, MemoryBank]:
    rng = np.random.default_rng(seed)
    rows = rng.normal(size=(sum(counts), c)) + 5.0  # an offset: centring has work to do
    return rows, MemoryBank.from_rows(torch.tensor(rows).float(), counts)


def _kernels() -> list[nearest.NearestLibrary | None]:
    library, _ = nearest.load()
    return [None] if library is None else [None, library]


@pytest.mark.parametrize("fused", _kernels(), ids=lambda k: "torch" if k is None else "fused")
@pytest.mark.parametrize(
    ("counts", "exclude", "block_bytes"),
    [
        ([4, 0, 7, 5], (), 4 * 3),  # an image with no rows, 3-row blocks
        ([4, 6, 7, 5], (1,), 4 * 37 * 5),  # the middle image's rows left out: two segments
        ([4, 6, 7, 5], (0, 3), 1 << 20),  # the first and last images left out
        ([9], (), 4),  # one image, one-row blocks
    ],
)
def test_bank_search_equals_the_float64_brute_force_without_the_excluded_images(
    fused: nearest.NearestLibrary | None, counts: list[int], exclude: tuple[int, ...], block_bytes: int
) -> None:
    rows, bank = _bank(len(counts) + sum(exclude), counts, 6)
    query = np.random.default_rng(3).normal(size=(37, 6)) + 5.0
    image_of = np.repeat(np.arange(len(counts)), counts)
    allowed = ~np.isin(image_of, exclude)
    got = bank_search(torch.tensor(query).float(), bank, exclude, fused, block_bytes).numpy()
    want = _ref(query, rows, allowed)
    assert np.max(np.abs(got - want) / np.maximum(want, 1e-6)) < REL_TOL


def test_a_query_equal_to_a_bank_row_is_at_distance_zero_unless_its_image_is_left_out() -> None:
    rows, bank = _bank(1, [3, 3], 4)
    query = torch.tensor(rows[4:5]).float()  # a row of image 1
    for fused in _kernels():
        assert float(bank_search(query, bank, (), fused)[0]) < 1e-3
        assert float(bank_search(query, bank, (1,), fused)[0]) > 0.1


def test_bank_maps_leave_each_image_its_own_exclusion_and_match_the_whole_batch_search() -> None:
    rows, bank = _bank(2, [5, 5, 5], 3)
    test = torch.tensor(np.random.default_rng(4).normal(size=(2, 3, 2, 3)) + 5.0).float()
    whole = bank_maps(test, bank)
    same = bank_maps(test, bank, [[], []])
    torch.testing.assert_close(whole, same)
    left = bank_maps(test, bank, [[0], [2]])
    q0 = test[0].permute(1, 2, 0).reshape(-1, 3).double().numpy()
    want = _ref(q0, rows, np.repeat(np.arange(3), 5) != 0).reshape(2, 3)
    np.testing.assert_allclose(left[0].numpy(), want, rtol=REL_TOL)


def test_a_bank_refuses_counts_that_do_not_add_up_and_a_search_with_every_row_left_out() -> None:
    with pytest.raises(ValueError, match="add up"):
        MemoryBank.from_rows(torch.zeros(5, 2), [2, 2])
    _, bank = _bank(0, [2, 2], 2)
    with pytest.raises(ValueError, match="no memory bank rows"):
        bank_search(torch.zeros(1, 2), bank, (0, 1))


def test_the_bank_holds_rows_and_norms_as_views_of_its_augmented_rows() -> None:
    _, bank = _bank(0, [3, 4], 5)
    assert bank.rows.data_ptr() == bank.augmented.data_ptr()
    torch.testing.assert_close(bank.sq_norms, (bank.rows**2).sum(1))
    assert bank.offsets == (0, 3, 7) and bank.ranges((0,)) == [(3, 7)] and bank.ranges() == [(0, 7)]
