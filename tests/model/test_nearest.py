"""The fused nearest-row kernel against float64 brute force, on every instruction set this CPU runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inspector.model import kernel, nearest

REL_TOL = 1e-5

LIBRARY, WHY = nearest.load()
needs_library = pytest.mark.skipif(LIBRARY is None, reason=f"fused kernel not built: {WHY}")


def _isas() -> list[str]:
    if LIBRARY is None:
        return []
    return list(nearest.ISA_NAMES[: nearest.ISA_NAMES.index(LIBRARY.best_isa) + 1])


def _brute(q: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d = np.sqrt(((q[:, None, :].astype(np.float64) - g[None, :, :].astype(np.float64)) ** 2).sum(2))
    return d.min(1), d.argmin(1)


def test_the_build_provides_the_library_on_this_machine() -> None:
    # The install builds it (tools/bootstrap.sh -> pip install -e .); a missing build would hide every test below.
    assert LIBRARY is not None, WHY
    assert LIBRARY.best_isa in nearest.ISA_NAMES


@needs_library
@pytest.mark.parametrize("isa", _isas())
@pytest.mark.parametrize(
    ("m", "n", "c"),
    [
        (1, 1, 1),  # one query, one row
        (33, 7, 3),  # a query tail past 32 and 16 lanes; a gallery tail past 4 rows
        (70, 129, 24),  # Lite0's stride-4 channels
        (17, 50, 37),  # an odd channel count
        (5, 3, 130),  # more channels than queries and rows
    ],
)
def test_every_isa_finds_the_float64_nearest_row(isa: str, m: int, n: int, c: int) -> None:
    rng = np.random.default_rng(m * 1000 + n * 10 + c)
    q = rng.normal(size=(m, c)).astype(np.float32)
    g = rng.normal(size=(n, c)).astype(np.float32)
    dist, index = nearest.nearest(torch.from_numpy(q), torch.from_numpy(g), isa=isa, threads=2)
    want_d, want_i = _brute(q, g)
    np.testing.assert_allclose(dist.numpy(), want_d, rtol=REL_TOL, atol=1e-6)
    assert (index.numpy() == want_i).all()


@needs_library
@pytest.mark.parametrize("isa", _isas())
def test_ties_go_to_the_first_row_and_the_distance_is_exact(isa: str) -> None:
    rng = np.random.default_rng(7)
    base = rng.normal(size=(6, 8)).astype(np.float32)
    g = np.concatenate([base, base, base[:3]])  # every row twice or three times: exact ties
    q = np.concatenate([base, rng.normal(size=(40, 8)).astype(np.float32)])
    dist, index = nearest.nearest(torch.from_numpy(q), torch.from_numpy(g), isa=isa)
    want_d, want_i = _brute(q, g)  # numpy's argmin also takes the first of equal values
    assert (index.numpy() == want_i).all()
    assert (dist.numpy()[:6] == 0.0).all()  # a query equal to a row: exactly zero by direct difference
    np.testing.assert_allclose(dist.numpy(), want_d, rtol=REL_TOL, atol=1e-6)


@needs_library
@pytest.mark.parametrize("threads", [1, 2, 3, 64])
def test_the_result_does_not_depend_on_the_thread_count(threads: int) -> None:
    rng = np.random.default_rng(threads)
    q, g = torch.from_numpy(rng.normal(size=(301, 24)).astype(np.float32)), torch.randn(90, 24)
    one = nearest.nearest(q, g, threads=1)
    many = nearest.nearest(q, g, threads=threads)
    assert torch.equal(one[0], many[0]) and torch.equal(one[1], many[1])


@needs_library
def test_segments_are_numbered_in_order_and_strided_rows_are_read_in_place() -> None:
    # The bank's layout: rows with their squared norm appended, one segment per gallery image.
    rng = np.random.default_rng(3)
    feats = torch.from_numpy(rng.normal(size=(4, 5, 3, 3)).astype(np.float32))  # [N, C, H, W]
    bank = kernel.StageBank.from_features(feats)
    q = torch.from_numpy(rng.normal(size=(20, 5)).astype(np.float32))
    images = [2, 0, 3]
    assert LIBRARY is not None
    dist, index = LIBRARY.search(q, [nearest.Segment(bank.rows[i], bank.sq_norms[i]) for i in images])
    rows = torch.cat([bank.rows[i] for i in images]).numpy()
    want_d, want_i = _brute(q.numpy(), rows)
    assert (index.numpy() == want_i).all()
    np.testing.assert_allclose(dist.numpy(), want_d, rtol=REL_TOL, atol=1e-6)


@needs_library
def test_unusable_inputs_are_refused_with_the_reason() -> None:
    q, g = torch.randn(4, 3), torch.randn(5, 3)
    with pytest.raises(nearest.NearestError, match="float32"):
        nearest.nearest(q.double(), g)
    with pytest.raises(nearest.NearestError, match="columns"):
        nearest.nearest(q, torch.randn(5, 4))
    with pytest.raises(nearest.NearestError, match="contiguous"):
        nearest.nearest(torch.randn(3, 4).T, g)
    with pytest.raises(nearest.NearestError, match="unknown instruction set"):
        nearest.nearest(q, g, isa="sse9")


def test_without_the_library_auto_uses_the_torch_kernel_and_fused_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(nearest, "load", lambda: (None, "not built here"))
    assert kernel.select_fused("auto", torch.device("cpu")) == (None, "not built here")
    with pytest.raises(nearest.NearestError, match="pixel_kernel: fused: not built here"):
        kernel.select_fused("fused", torch.device("cpu"))
    with pytest.raises(nearest.NearestError, match="CPU only"):
        kernel.select_fused("fused", torch.device("cuda"))
    assert kernel.select_fused("auto", torch.device("cuda"))[0] is None
    assert kernel.select_fused("torch", torch.device("cpu"))[0] is None


def test_a_missing_library_file_is_reported_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nearest, "library_path", lambda: None)
    nearest.load.cache_clear()
    try:
        library, reason = nearest.load()
        assert library is None and "not built" in reason
    finally:
        monkeypatch.undo()
        nearest.load.cache_clear()
