"""SPADE math on tensors: exact kNN image scores, pyramid patch matching, anomaly maps (pure, device-agnostic)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

BYTES_PER_FLOAT32 = 4
BLUR_TRUNCATE_SIGMAS = 4.0  # kernel radius in sigmas (scipy.ndimage's default)
TOP_MEAN_FRACTION = 0.01  # map_top_mean averages the top 1% of the map
SCALE_FLOOR = 1e-6  # smallest stage scale / map value used in a division or a logarithm


def _search_matmul(q: torch.Tensor, b: torch.Tensor, precision: str) -> torch.Tensor:
    """q @ b.T for the candidate search, in the requested precision, returned as float32."""
    if precision == "bfloat16" and q.device.type == "cuda":
        return (q.bfloat16() @ b.bfloat16().T).float()
    if precision == "tf32" and q.device.type == "cuda":
        matmul = torch.backends.cuda.matmul
        prev = matmul.fp32_precision
        matmul.fp32_precision = "tf32"
        try:
            out: torch.Tensor = q @ b.T
            return out
        finally:
            matmul.fp32_precision = prev
    return q @ b.T


def pairwise_sq_dists(
    a: torch.Tensor, b: torch.Tensor, precision: str = "float32", b_sq: torch.Tensor | None = None
) -> torch.Tensor:
    """Squared L2 distances [M, N] between rows of a [M, D] and b [N, D] via |a|^2 + |b|^2 - 2ab.

    ``b_sq`` gives b's squared row norms when they are known (a gallery's, from load time). Rounding can
    make tiny distances slightly negative; they are clamped to zero.
    """
    a_sq = (a * a).sum(1, keepdim=True)
    b_sq = ((b * b).sum(1) if b_sq is None else b_sq).unsqueeze(0)
    return (a_sq + b_sq - 2.0 * _search_matmul(a, b, precision)).clamp_min_(0.0)


def knn_scores(
    query: torch.Tensor,
    gallery: torch.Tensor,
    k: int,
    n_neighbours: int,
    exclude: torch.Tensor | None = None,
    precision: str = "float32",
    gallery_sq: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Image scores: mean L2 distance of each query's pooled feature to its k nearest gallery features.

    Args:
        query: [B, D] pooled test features.
        gallery: [N, D] pooled gallery features.
        k: neighbours averaged for the score (clipped to the gallery size).
        n_neighbours: how many nearest gallery indices to return (for pixel matching, K).
        exclude: optional gallery indices to leave out per query: [B] (leave-one-out calibration) or [B, M]
            (leave-m-out and k-fold; a row may repeat an index to pad it to M).
        precision: candidate-search arithmetic; the returned distances are always exact float32.
        gallery_sq: [N] squared norms of the gallery rows, when precomputed.

    Returns:
        scores [B] and the indices [B, min(n_neighbours, available)] of the nearest gallery images, nearest first.
    """
    rows = None if exclude is None else (exclude if exclude.ndim == 2 else exclude.unsqueeze(1))
    n = gallery.shape[0] - (0 if rows is None else _most_left_out(rows))
    if n < 1:
        raise ValueError("the gallery needs at least one image to compare against")
    kk = min(max(k, n_neighbours), n)
    d2 = pairwise_sq_dists(query, gallery, precision, gallery_sq)
    if rows is not None:
        d2.scatter_(1, rows.to(d2.device), float("inf"))
    idx = torch.topk(d2, kk, dim=1, largest=False, sorted=True).indices
    # Exact distances for the chosen neighbours, by direct difference (no cancellation).
    exact = torch.linalg.vector_norm(query.unsqueeze(1) - gallery[idx], dim=2)
    order = torch.argsort(exact, dim=1, stable=True)
    idx = torch.gather(idx, 1, order)
    exact = torch.gather(exact, 1, order)
    scores = exact[:, : min(k, n)].mean(1)
    return scores, idx[:, : min(n_neighbours, n)]


def _most_left_out(rows: torch.Tensor) -> int:
    """The largest number of distinct indices any row of a [B, M] exclusion leaves out."""
    if rows.shape[1] <= 1:
        return int(rows.shape[1])
    ordered = rows.sort(1).values
    return int(1 + (ordered[:, 1:] != ordered[:, :-1]).sum(1).max())


def nearest_distances(
    query: torch.Tensor, bank: torch.Tensor, chunk_bytes: int, precision: str = "float32"
) -> torch.Tensor:
    """For each row of query [L, C], the L2 distance to its nearest row of bank [M, C].

    The bank is walked in chunks sized so that one [L, chunk] distance block stays under chunk_bytes; every
    chunk, the last partial one included, takes part in the running minimum. The winner's distance is then
    recomputed by direct difference, so the result is exact float32 even where |a|^2+|b|^2-2ab cancels.
    """
    if bank.shape[0] == 0:
        raise ValueError("empty feature bank")
    centre = bank.mean(0, keepdim=True)  # distances are translation invariant; centring limits cancellation
    q = query - centre
    rows = max(1, chunk_bytes // (BYTES_PER_FLOAT32 * max(1, q.shape[0])))
    best = torch.full((q.shape[0],), float("inf"), device=q.device)
    best_idx = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    for start in range(0, bank.shape[0], rows):
        b = bank[start : start + rows] - centre
        # |q|^2 is constant per row, so the argmin needs only |b|^2 - 2 q.b (one fused addmm in float32)
        b_sq = (b * b).sum(1).unsqueeze(0)
        if precision == "float32" or q.device.type != "cuda":
            part = torch.addmm(b_sq, q, b.T, alpha=-2.0)
        else:
            part = b_sq - 2.0 * _search_matmul(q, b, precision)
        val, arg = part.min(1)
        better = val < best
        best = torch.where(better, val, best)
        best_idx = torch.where(better, arg + start, best_idx)
    exact: torch.Tensor = torch.linalg.vector_norm(query - bank[best_idx], dim=1)
    return exact


def neighbourhood_average(features: torch.Tensor, size: int) -> torch.Tensor:
    """Average each location of [B, C, H, W] with its size x size neighbourhood (size 1 returns the input)."""
    if size <= 1:
        return features
    return F.avg_pool2d(features, size, stride=1, padding=size // 2, count_include_pad=False)


def gaussian_kernel(sigma: float, device: torch.device) -> torch.Tensor:
    """Normalised 1-D Gaussian kernel with radius round(4 sigma), like scipy.ndimage.gaussian_filter."""
    radius = int(BLUR_TRUNCATE_SIGMAS * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).to(device=device, dtype=torch.float32)


def _symmetric_pad(x: torch.Tensor, radius: int, dim: int) -> torch.Tensor:
    """Pad by mirroring including the edge sample (scipy's 'reflect' mode), repeating for large radii."""
    while radius > 0:
        step = min(radius, x.shape[dim])
        head = x.narrow(dim, 0, step).flip(dim)
        tail = x.narrow(dim, x.shape[dim] - step, step).flip(dim)
        x = torch.cat([head, x, tail], dim)
        radius -= step
    return x


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of [B, H, W] maps (sigma in pixels; 0 returns the input)."""
    if sigma <= 0:
        return maps
    k = gaussian_kernel(sigma, maps.device)
    r = (k.numel() - 1) // 2
    x = maps.unsqueeze(1)
    x = F.conv2d(_symmetric_pad(x, r, 2), k.view(1, 1, -1, 1))
    x = F.conv2d(_symmetric_pad(x, r, 3), k.view(1, 1, 1, -1))
    return x.squeeze(1)


def stage_maps(
    test: torch.Tensor,
    gallery: torch.Tensor,
    neighbours: torch.Tensor,
    chunk_bytes: int,
    precision: str = "float32",
) -> torch.Tensor:
    """Per-location nearest-feature distance for one pyramid stage.

    Args:
        test: [B, C, H, W] test features.
        gallery: [N, C, Hg, Wg] gallery features.
        neighbours: [B, K] gallery indices searched for each test image.
        chunk_bytes: memory bound of one distance block.
        precision: candidate-search arithmetic.

    Returns:
        [B, H, W] distances (kappa = 1: to the single nearest of all locations of the K images).
    """
    b, c, h, w = test.shape
    out = torch.empty((b, h, w), device=test.device)
    for i in range(b):
        q = test[i].reshape(c, h * w).T
        bank = gallery[neighbours[i]].permute(0, 2, 3, 1).reshape(-1, c)
        out[i] = nearest_distances(q, bank, chunk_bytes, precision).view(h, w)
    return out


def fuse_maps(
    maps: list[torch.Tensor],
    out_px: tuple[int, int],
    sigma: float,
    scales: list[float] | None = None,
    geometric: bool = False,
    region: torch.Tensor | None = None,
) -> torch.Tensor:
    """Upsample each [B, h, w] stage map bilinearly to out_px, average the stages, blur with sigma.

    Args:
        maps: per-stage distance maps.
        out_px: output (height, width).
        sigma: Gaussian blur sigma in output pixels.
        scales: optional divisor per stage (its typical distance on normal images), so that every stage
            weighs the same in the average; None averages raw distances as the paper does.
        geometric: geometric instead of arithmetic mean of the (scaled) stages.
        region: optional [out_h, out_w] bool inspection region: the map is zeroed outside it before the blur
            (nothing outside bleeds in) and after it (nothing outside scores).
    """
    if scales is not None:
        maps = [m / max(s, SCALE_FLOOR) for m, s in zip(maps, scales, strict=True)]
    up = torch.stack(
        [F.interpolate(m.unsqueeze(1), size=out_px, mode="bilinear", align_corners=False) for m in maps], 0
    ).squeeze(2)
    fused = up.clamp_min(SCALE_FLOOR).log().mean(0).exp() if geometric else up.mean(0)
    if region is None:
        return gaussian_blur(fused, sigma)
    inside = region.to(fused.dtype)
    return gaussian_blur(fused * inside, sigma) * inside


def map_image_scores(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Image scores from [B, H, W] anomaly maps: (maximum, mean of the top 1% of locations)."""
    flat = maps.flatten(1)
    top = max(1, math.ceil(flat.shape[1] * TOP_MEAN_FRACTION))
    return flat.max(1).values, torch.topk(flat, top, dim=1).values.mean(1)
