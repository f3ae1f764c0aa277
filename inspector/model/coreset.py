"""Greedy (k-centre) coreset subsampling of gallery locations for the memory bank: seeded, blocked, with progress."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from inspector.model.manifest import MemoryBank

CORESET_SEED = 0  # the seed new galleries record (their coreset is reproducible from their images)
CORESET_BLOCK_ROWS = 1 << 16  # rows one greedy pass holds with their running distances: bounded memory
PROJECTED_DIMS = 128  # wider features are selected on a seeded random projection (Johnson-Lindenstrauss)

Progress = Callable[[int], None]


def coreset_size(rows: int, fraction: float) -> int:
    """Rows a coreset of ``fraction`` of ``rows`` keeps: at least one, at most all."""
    return min(rows, max(1, math.ceil(rows * fraction - 1e-9)))


def greedy_coreset(rows: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """Indices of ``count`` rows of ``rows`` [n, C] chosen by greedy k-centre selection, in the order chosen.

    The first row is drawn with ``generator``; each next one is the row farthest (L2) from every row chosen
    so far, so the chosen rows cover the others with the smallest radius greedy can reach (the minimax
    facility location of PatchCore, Roth et al. 2022). Ties go to the lowest index. Memory: the rows, their
    norms and one running distance per row. ``count == n`` returns every row in index order.
    """
    n = rows.shape[0]
    if not 1 <= count <= n:
        raise ValueError(f"a coreset of {count} rows out of {n}")
    if count == n:  # every row: nothing to choose (greedy would only order them)
        return torch.arange(n)
    x = rows.float()
    x = x - x.mean(0)  # distances are translation invariant; centring limits cancellation
    sq = (x * x).sum(1)
    # [x, 1] . [-2c, |c|^2] = |c|^2 - 2 x.c, with the rows column-major (a streaming matrix-vector product)
    x_aug = torch.cat([x, torch.ones(n, 1)], 1).T.contiguous()
    centre = torch.empty(x.shape[1] + 1)
    nearest = torch.full((n,), float("inf"))
    d = torch.empty(n)
    chosen = torch.empty(count, dtype=torch.long)
    pick = int(torch.randint(n, (1,), generator=generator))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # thousands of small steps: waking a second thread costs more than it gives
    try:
        for j in range(count):
            chosen[j] = pick
            torch.mul(x[pick], -2.0, out=centre[:-1])
            centre[-1] = sq[pick]
            torch.addmv(sq, x_aug.T, centre, out=d)  # squared distance of every row to the new centre
            torch.minimum(nearest, d, out=nearest)
            pick = int(torch.argmax(nearest))
    finally:
        torch.set_num_threads(threads)
    return chosen


def _projection(channels: int, seed: int) -> torch.Tensor | None:
    """A seeded Gaussian [C, PROJECTED_DIMS] projection for features wider than PROJECTED_DIMS, else None."""
    if channels <= PROJECTED_DIMS:
        return None
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(channels, PROJECTED_DIMS, generator=generator) / math.sqrt(PROJECTED_DIMS)


def stage_coreset(
    features: torch.Tensor, fraction: float, seed: int, progress: Progress | None = None
) -> tuple[torch.Tensor, list[int]]:
    """The memory bank of one stage: a coreset of every location of every gallery image.

    Gallery images are taken in blocks of whole images of at most CORESET_BLOCK_ROWS locations (one image
    when an image alone has more); each block keeps ``fraction`` of its locations by :func:`greedy_coreset`,
    so memory stays bounded and the cost is linear in the gallery size. Features wider than PROJECTED_DIMS
    are selected on a seeded random projection; the bank keeps the original rows.

    Args:
        features: [N, C, H, W] gallery features of the stage (CPU).
        fraction: share of the locations kept, in (0, 1].
        seed: seeds the projection and each block's first row.
        progress: called with the number of gallery images done after each block.

    Returns:
        The kept rows [M, C] float32, grouped by gallery image in order (within an image in location order),
        and the rows kept of each image.
    """
    n, c, h, w = features.shape
    per_image = h * w
    block_images = max(1, CORESET_BLOCK_ROWS // per_image)
    generator = torch.Generator().manual_seed(seed)
    projection = _projection(c, seed)
    kept: list[torch.Tensor] = []
    counts: list[int] = []
    for start in range(0, n, block_images):
        block = features[start : start + block_images].float()
        images = block.shape[0]
        rows = block.permute(0, 2, 3, 1).reshape(images * per_image, c)
        searched = rows if projection is None else rows @ projection
        chosen = greedy_coreset(searched, coreset_size(rows.shape[0], fraction), generator).sort().values
        kept.append(rows[chosen])
        counts += torch.bincount(chosen // per_image, minlength=images).tolist()
        if progress:
            progress(images)
    return torch.cat(kept).contiguous(), counts


def memory_bank(
    stages: dict[int, torch.Tensor],
    fraction: float,
    seed: int = CORESET_SEED,
    progress: Progress | None = None,
) -> tuple[dict[int, torch.Tensor], MemoryBank]:
    """Every stage's memory bank (:func:`stage_coreset`) and the manifest record of what it kept.

    ``progress`` counts gallery images once per stage.
    """
    banks: dict[int, torch.Tensor] = {}
    counts: dict[str, list[int]] = {}
    for stage in sorted(stages):
        banks[stage], counts[f"stage{stage}"] = stage_coreset(stages[stage], fraction, seed + stage, progress)
    return banks, MemoryBank(coreset_fraction=fraction, seed=seed, rows_per_image=counts)
