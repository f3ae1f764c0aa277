"""The fast pixel-matching kernel against brute-force float64 references on small random tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inspector.model import kernel, nearest
from tests.model.test_spade import REL_TOL, ref_stage_map, rel_err

FP16_REL_TOL = 1e-3
QUERY_BLOCK_ROWS = 256  # query rows per block in the tests, so small maps still span several blocks


def ref_window_map(test: np.ndarray, gallery: np.ndarray, neighbours: np.ndarray, radius: int) -> np.ndarray:
    """For each test location, min distance to gallery locations within radius cells (float64 loops)."""
    b, _, h, w = test.shape
    out = np.empty((b, h, w))
    for i in range(b):
        for y in range(h):
            for x in range(w):
                ys, xs = slice(max(0, y - radius), y + radius + 1), slice(max(0, x - radius), x + radius + 1)
                cand = gallery[neighbours[i]][:, :, ys, xs]
                out[i, y, x] = np.sqrt(((cand - test[i, :, y, x][None, :, None, None]) ** 2).sum(1)).min()
    return out


def _case(seed: int, n: int, c: int, h: int, w: int, kk: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    gallery = rng.normal(size=(n, c, h, w)) + 3.0  # an offset: the bank's centring has work to do
    test = rng.normal(size=(3, c, h, w)) + 3.0
    neighbours = np.stack([rng.permutation(n)[:kk] for _ in range(3)])
    return test, gallery, neighbours


def _maps(
    test: np.ndarray, gallery: np.ndarray, nb: np.ndarray, search: kernel.Search, dtype: torch.dtype
) -> np.ndarray:
    bank = kernel.StageBank.from_features(torch.tensor(gallery).float(), dtype)
    return kernel.stage_maps(torch.tensor(test).float(), bank, torch.tensor(nb), search).numpy()


@pytest.mark.parametrize(
    ("n", "kk", "c", "h", "w", "block_bytes"),
    [
        (5, 2, 3, 4, 4, 4),  # one-row gallery blocks
        (9, 4, 8, 5, 7, 4 * 35 * 13),  # 13-row blocks over 35-row images: a partial last block per image
        (12, 12, 16, 6, 6, 1 << 20),  # one block per image
        (7, 3, 24, 23, 25, 4 * 256 * 100),  # 575 locations: three query blocks of 256, the last partial
    ],
)
def test_full_search_equals_float64_brute_force(
    n: int, kk: int, c: int, h: int, w: int, block_bytes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kernel, "CPU_QUERY_BLOCK_ROWS", QUERY_BLOCK_ROWS)
    test, gallery, nb = _case(n * c + h, n, c, h, w, kk)
    got = _maps(test, gallery, nb, kernel.Search("full", 0, block_bytes), torch.float32)
    assert rel_err(got, ref_stage_map(test, gallery, nb)) < REL_TOL


def test_full_search_with_a_float16_bank_is_within_1e3_of_the_float32_reference() -> None:
    test, gallery, nb = _case(4, 8, 24, 7, 9, 5)
    got = _maps(test, gallery, nb, kernel.Search("full", 0, 4 * 63 * 10), torch.float16)
    assert rel_err(got, ref_stage_map(test, gallery, nb)) < FP16_REL_TOL


def test_float32_bank_holds_rows_and_norms_once_as_views_of_the_augmented_rows() -> None:
    bank = kernel.StageBank.from_features(torch.randn(3, 5, 4, 4))
    assert bank.augmented is not None and bank.augmented.shape == (3, 16, 6)
    assert bank.rows.data_ptr() == bank.augmented.data_ptr()
    torch.testing.assert_close(bank.augmented[:, :, 5], (bank.rows**2).sum(2))
    assert bank.nbytes == bank.augmented.numel() * 4 + bank.centre.numel() * 4


def test_float16_bank_stores_half_the_bytes_and_computes_norms_in_float32() -> None:
    feats = torch.randn(4, 8, 3, 3)
    half = kernel.StageBank.from_features(feats, torch.float16)
    full = kernel.StageBank.from_features(feats, torch.float32)
    assert half.rows.dtype == torch.float16 and half.sq_norms.dtype == torch.float32
    assert half.rows.element_size() * 2 == full.rows.element_size()
    torch.testing.assert_close(half.sq_norms, (half.rows.float() ** 2).sum(2))


def test_full_search_finds_the_twin_in_the_last_block_of_the_last_image() -> None:
    rng = np.random.default_rng(0)
    gallery = rng.normal(size=(3, 4, 5, 5)) * 10
    test = gallery[2:3, :, :, :].copy()
    test[0, :, 2, 3] = gallery[2, :, 4, 4] + 1e-3  # its twin is the very last bank row
    got = _maps(test, gallery, np.array([[0, 1, 2]]), kernel.Search("full", 0, 4 * 3), torch.float32)
    assert got[0, 2, 3] == pytest.approx(2e-3, rel=1e-3)


def test_full_search_is_exact_for_near_duplicates_with_large_norms() -> None:
    # |q|^2+|g|^2-2qg alone would cancel to noise here; the direct recomputation keeps it exact.
    base = torch.full((1, 64, 1, 1), 1000.0)
    bank = kernel.StageBank.from_features(torch.cat([base + 0.01, base + 5.0, base - 7.0]))
    got = kernel.full_search(base.reshape(1, 64), bank, torch.tensor([2, 1, 0]), 1 << 20)
    assert got.item() == pytest.approx(0.01 * 8.0, rel=1e-3)  # sqrt(64) * 0.01


@pytest.mark.parametrize(("radius", "chunk_bytes"), [(1, 1 << 20), (2, 4), (3, 1 << 20)])
def test_window_search_equals_float64_windowed_brute_force(radius: int, chunk_bytes: int) -> None:
    test, gallery, nb = _case(radius, 6, 5, 6, 8, 4)
    got = _maps(test, gallery, nb, kernel.Search("window", radius, chunk_bytes=chunk_bytes), torch.float32)
    assert rel_err(got, ref_window_map(test, gallery, nb, radius)) < REL_TOL


def test_window_search_over_several_partial_tiles_equals_float64_windowed_brute_force() -> None:
    test, gallery, nb = _case(8, 4, 3, 19, 17, 3)  # 3 x 3 tiles of 8 cells, the last ones partial
    got = _maps(test, gallery, nb, kernel.Search("window", 2, chunk_bytes=4 * 144 * 3 * 2), torch.float32)
    assert rel_err(got, ref_window_map(test, gallery, nb, 2)) < REL_TOL


def test_window_covering_the_whole_map_equals_the_full_search() -> None:
    test, gallery, nb = _case(11, 5, 6, 4, 5, 3)
    window = _maps(test, gallery, nb, kernel.Search("window", 5), torch.float32)
    full = _maps(test, gallery, nb, kernel.Search("full"), torch.float32)
    assert rel_err(window, full) < REL_TOL


def test_window_search_never_matches_a_twin_outside_its_radius() -> None:
    gallery = np.zeros((1, 2, 6, 6))
    test = np.full((1, 2, 6, 6), 5.0)
    gallery[0, :, 5, 5] = 5.0  # the only exact match sits in the far corner
    got = _maps(test, gallery, np.array([[0]]), kernel.Search("window", 1), torch.float32)
    assert got[0, 5, 5] == pytest.approx(0.0, abs=1e-6) and got[0, 4, 4] == pytest.approx(0.0, abs=1e-6)
    assert got[0, 0, 0] == pytest.approx(np.sqrt(50.0), rel=1e-5)


def test_window_search_refuses_a_query_of_another_map_size() -> None:
    bank = kernel.StageBank.from_features(torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError, match="does not match"):
        kernel.window_search(torch.zeros(3, 5, 4), bank, torch.tensor([0]), 1, 1 << 20)


@pytest.mark.parametrize(("cells", "stage", "want"), [(2, 0, 2), (2, 1, 1), (2, 2, 1), (4, 1, 2), (5, 2, 2)])
def test_stage_radius_scales_the_stride4_radius_to_each_stage(cells: int, stage: int, want: int) -> None:
    assert kernel.stage_radius(cells, stage) == want


def test_bank_refuses_empty_features_and_other_storage_dtypes() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        kernel.StageBank.from_features(torch.zeros(0, 3, 2, 2))
    with pytest.raises(ValueError, match="float32 or float16"):
        kernel.StageBank.from_features(torch.zeros(1, 3, 2, 2), torch.bfloat16)


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@CUDA
@pytest.mark.parametrize("mode", ["full", "window"])
def test_cuda_search_equals_float64_brute_force(mode: str) -> None:
    test, gallery, nb = _case(21, 6, 16, 9, 11, 4)
    bank = kernel.StageBank.from_features(torch.tensor(gallery).float().cuda())
    search = kernel.Search(mode, 2, 64 << 20, 64 << 20)
    got = kernel.stage_maps(torch.tensor(test).float().cuda(), bank, torch.tensor(nb).cuda(), search).cpu()
    want = ref_stage_map(test, gallery, nb) if mode == "full" else ref_window_map(test, gallery, nb, 2)
    assert rel_err(got.numpy(), want) < REL_TOL


@CUDA
@pytest.mark.parametrize("precision", ["tf32", "bfloat16"])
def test_cuda_reduced_precision_candidates_still_give_exact_float32_distances(precision: str) -> None:
    test, gallery, nb = _case(22, 6, 16, 9, 11, 4)
    bank = kernel.StageBank.from_features(torch.tensor(gallery).float().cuda())
    search = kernel.Search("full", 0, 64 << 20, 64 << 20, precision)
    got = kernel.stage_maps(torch.tensor(test).float().cuda(), bank, torch.tensor(nb).cuda(), search).cpu()
    want = ref_stage_map(test, gallery, nb)
    assert np.all(
        got.numpy() >= want * (1 - REL_TOL)
    )  # a distance to a real gallery row: never below the min
    assert rel_err(got.numpy(), want) < 0.05  # a near-tie may pick another winner, measured exactly


@pytest.mark.skipif(nearest.load()[0] is None, reason="fused kernel not built")
@pytest.mark.parametrize(
    ("n", "kk", "c", "h", "w"),
    [(5, 2, 3, 4, 4), (9, 4, 8, 5, 7), (12, 12, 16, 6, 6), (7, 3, 24, 23, 25)],
)
def test_the_fused_search_equals_float64_brute_force(n: int, kk: int, c: int, h: int, w: int) -> None:
    library, _ = nearest.load()
    test, gallery, nb = _case(n * c + h + 1, n, c, h, w, kk)
    got = _maps(test, gallery, nb, kernel.Search("full", fused=library), torch.float32)
    assert rel_err(got, ref_stage_map(test, gallery, nb)) < REL_TOL


@pytest.mark.skipif(nearest.load()[0] is None, reason="fused kernel not built")
def test_the_fused_and_torch_searches_agree_and_a_twin_in_the_gallery_tail_is_found() -> None:
    library, _ = nearest.load()
    test, gallery, nb = _case(11, 6, 24, 9, 11, 4)
    gallery[nb[0, -1], :, -1, -1] = test[0, :, 2, 3]  # an exact twin: the very last row of the last image
    fused = _maps(test, gallery, nb, kernel.Search("full", fused=library), torch.float32)
    plain = _maps(test, gallery, nb, kernel.Search("full"), torch.float32)
    assert fused[0, 2, 3] == 0.0
    np.testing.assert_allclose(fused, plain, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(nearest.load()[0] is None, reason="fused kernel not built")
def test_a_float16_bank_keeps_the_torch_search_when_the_fused_kernel_is_on() -> None:
    library, _ = nearest.load()
    test, gallery, nb = _case(5, 5, 8, 6, 6, 3)
    got = _maps(test, gallery, nb, kernel.Search("full", fused=library), torch.float16)
    assert rel_err(got, ref_stage_map(test, gallery, nb)) < FP16_REL_TOL
