"""SPADE math against a brute-force float64 reference on small random tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from inspector.model import spade

REL_TOL = 1e-4


def ref_knn(query: np.ndarray, gallery: np.ndarray, k: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """Mean distance to the k nearest, by explicit float64 differences."""
    d = np.sqrt(((query[:, None, :] - gallery[None, :, :]) ** 2).sum(-1))
    if exclude is not None:
        d[np.arange(len(query)), exclude] = np.inf
    return np.asarray(np.sort(d, axis=1)[:, :k].mean(1))


def ref_stage_map(test: np.ndarray, gallery: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """For each test location, min distance over all locations of the chosen gallery images (float64 loops)."""
    b, c, h, w = test.shape
    out = np.empty((b, h, w))
    for i in range(b):
        bank = gallery[neighbours[i]].transpose(0, 2, 3, 1).reshape(-1, c)
        q = test[i].reshape(c, -1).T
        for j in range(q.shape[0]):
            out[i].flat[j] = np.sqrt(((bank - q[j]) ** 2).sum(1)).min()
    return out


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-12)))


@pytest.mark.parametrize(("n", "d", "k"), [(7, 5, 1), (13, 16, 3), (50, 32, 50), (97, 8, 10)])
def test_knn_scores_equal_float64_brute_force(n: int, d: int, k: int) -> None:
    rng = np.random.default_rng(n + d + k)
    g = rng.normal(size=(n, d))
    q = rng.normal(size=(4, d))
    scores, idx = spade.knn_scores(torch.tensor(q).float(), torch.tensor(g).float(), k, n_neighbours=k)
    assert rel_err(scores.numpy(), ref_knn(q, g, min(k, n))) < REL_TOL
    dist = np.sqrt(((q[:, None] - g[None]) ** 2).sum(-1))
    np.testing.assert_array_equal(idx.numpy(), np.argsort(dist, axis=1, kind="stable")[:, : min(k, n)])


def test_knn_scores_leave_one_out_never_picks_the_excluded_image() -> None:
    rng = np.random.default_rng(3)
    g = rng.normal(size=(11, 6))
    exclude = np.arange(5)
    scores, idx = spade.knn_scores(
        torch.tensor(g[:5]).float(), torch.tensor(g).float(), 3, 4, exclude=torch.tensor(exclude)
    )
    assert rel_err(scores.numpy(), ref_knn(g[:5], g, 3, exclude)) < REL_TOL
    assert not np.any(idx.numpy() == exclude[:, None])
    assert idx.shape == (5, 4)


def test_knn_with_k_larger_than_gallery_uses_every_image() -> None:
    g = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    scores, idx = spade.knn_scores(torch.tensor([[0.0, 0.0]]), g, k=50, n_neighbours=50)
    assert scores.item() == pytest.approx(2.5)  # (0 + 5) / 2
    assert idx.tolist() == [[0, 1]]


@pytest.mark.parametrize(
    ("n", "kk", "c", "h", "w", "chunk_bytes"),
    [
        (5, 2, 3, 4, 4, 64),  # chunks of 1 bank row: every row is its own chunk
        (9, 4, 8, 5, 7, 4 * 35 * 13),  # 13 rows per chunk, 4*5*7=140 rows: the last chunk is partial
        (12, 12, 16, 6, 6, 1 << 20),  # one chunk holds everything
        (7, 3, 24, 3, 5, 4 * 15 * 17),  # 17 rows per chunk over 45 rows: tail of 11
    ],
)
def test_stage_maps_equal_float64_brute_force(
    n: int, kk: int, c: int, h: int, w: int, chunk_bytes: int
) -> None:
    rng = np.random.default_rng(n * c + h)
    gallery = rng.normal(size=(n, c, h, w))
    test = rng.normal(size=(3, c, h, w))
    neighbours = np.stack([rng.permutation(n)[:kk] for _ in range(3)])
    got = spade.stage_maps(
        torch.tensor(test).float(), torch.tensor(gallery).float(), torch.tensor(neighbours), chunk_bytes
    )
    assert rel_err(got.numpy(), ref_stage_map(test, gallery, neighbours)) < REL_TOL


def test_nearest_distance_finds_a_match_that_sits_in_the_last_partial_chunk() -> None:
    rng = np.random.default_rng(0)
    bank = rng.normal(size=(103, 4)) * 10
    query = bank[-1:] + 1e-3  # its twin is the very last bank row
    got = spade.nearest_distances(torch.tensor(query).float(), torch.tensor(bank).float(), chunk_bytes=4 * 10)
    assert got.item() == pytest.approx(2e-3, rel=1e-3)


def test_nearest_distance_is_exact_for_near_duplicates_with_large_norms() -> None:
    # |a|^2+|b|^2-2ab alone would cancel to noise here; the direct recomputation keeps it exact.
    base = torch.full((1, 64), 1000.0)
    bank = torch.cat([base + 0.01, base + 5.0])
    got = spade.nearest_distances(base, bank, chunk_bytes=1 << 20)
    assert got.item() == pytest.approx(0.01 * 8.0, rel=1e-3)  # sqrt(64) * 0.01


def test_pairwise_sq_dists_matches_explicit_differences() -> None:
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(6, 9)), rng.normal(size=(4, 9))
    got = spade.pairwise_sq_dists(torch.tensor(a).float(), torch.tensor(b).float()).numpy()
    assert rel_err(got, ((a[:, None] - b[None]) ** 2).sum(-1)) < REL_TOL


@pytest.mark.parametrize("sigma", [1.0, 4.0, 2.5])
def test_gaussian_blur_matches_scipy_reflect_mode(sigma: float) -> None:
    rng = np.random.default_rng(1)
    maps = rng.random((2, 40, 33))
    got = spade.gaussian_blur(torch.tensor(maps).float(), sigma).numpy()
    want = np.stack([gaussian_filter(m, sigma, mode="reflect", truncate=4.0) for m in maps])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_gaussian_blur_handles_a_kernel_wider_than_the_map() -> None:
    maps = torch.rand(1, 6, 6, generator=torch.Generator().manual_seed(0))
    got = spade.gaussian_blur(maps, 4.0).numpy()  # radius 16 > 6
    want = gaussian_filter(maps[0].double().numpy(), 4.0, mode="reflect", truncate=4.0)
    np.testing.assert_allclose(got[0], want, rtol=1e-4, atol=1e-6)


def test_fuse_maps_upsamples_averages_and_blurs() -> None:
    m1 = torch.zeros(1, 4, 4)
    m1[0, 1, 2] = 8.0
    m2 = torch.ones(1, 2, 2)
    fused = spade.fuse_maps([m1, m2], (16, 16), sigma=0.0)
    up1 = torch.nn.functional.interpolate(m1[:, None], size=(16, 16), mode="bilinear", align_corners=False)
    torch.testing.assert_close(fused, (up1[:, 0] + 1.0) / 2)
    blurred = spade.fuse_maps([m1, m2], (16, 16), sigma=4.0)
    assert blurred.max() < fused.max()  # the peak is spread
    assert float(blurred.mean()) == pytest.approx(float(fused.mean()), rel=0.05)


def test_neighbourhood_average_is_a_3x3_mean_without_padding_zeros() -> None:
    x = torch.arange(16.0).view(1, 1, 4, 4)
    out = spade.neighbourhood_average(x, 3)
    assert out[0, 0, 1, 1].item() == pytest.approx(float(x[0, 0, :3, :3].mean()))
    assert out[0, 0, 0, 0].item() == pytest.approx(float(x[0, 0, :2, :2].mean()))  # corner: 4 real cells
    assert spade.neighbourhood_average(x, 1) is x


def test_map_image_scores_give_max_and_top_percent_mean() -> None:
    maps = torch.zeros(1, 10, 20)  # 200 cells: top 1% = 2 cells
    maps[0, 0, 0], maps[0, 5, 5], maps[0, 9, 9] = 9.0, 5.0, 1.0
    mx, top = spade.map_image_scores(maps)
    assert mx.item() == 9.0
    assert top.item() == pytest.approx(7.0)


def test_knn_scores_leave_m_out_never_picks_any_excluded_image_and_equals_the_reduced_gallery() -> None:
    rng = np.random.default_rng(4)
    g = rng.normal(size=(12, 6))
    rows = np.array([[0, 1, 2], [1, 0, 0], [2, 5, 7], [3, 3, 3]])  # repeats pad a row
    scores, idx = spade.knn_scores(
        torch.tensor(g[:4]).float(), torch.tensor(g).float(), 3, 4, exclude=torch.tensor(rows)
    )
    for i, row in enumerate(rows):
        keep = np.setdiff1d(np.arange(12), row)
        assert rel_err(scores.numpy()[i : i + 1], ref_knn(g[i : i + 1], g[keep], 3)) < REL_TOL
        assert not set(idx.numpy()[i].tolist()) & set(row.tolist())
    assert idx.shape == (4, 4)


def test_knn_scores_leave_m_out_clips_k_to_the_images_left_in_every_row() -> None:
    g = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    rows = torch.tensor([[0, 1, 2], [1, 1, 1]])
    scores, idx = spade.knn_scores(g[:2], g, k=50, n_neighbours=50, exclude=rows)
    assert idx.shape == (2, 1)
    assert scores.tolist() == pytest.approx([3.0, 1.0])  # row 0: only image 3 is left; row 1: nearest is 0
