"""Exact nearest-feature search near the GEMM floor: gallery banks in the search layout; fused, blocked or windowed."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from inspector.model import nearest
from inspector.model.spade import _search_matmul

BYTES_PER_FLOAT32 = 4
CPU_QUERY_BLOCK_ROWS = 4096  # query rows per block on CPU: a whole stride-4 map at crop 224 (performance.md)
CPU_BLOCK_BYTES = 24 << 20  # one distance block on CPU: 24 MiB, few and large GEMMs (swept in performance.md)
STORAGE_DTYPES = (torch.float32, torch.float16)
WINDOW_TILE_CELLS = 8  # window search: query tiles of 8 x 8 cells, each matched by one GEMM


@dataclass(frozen=True)
class StageBank:
    """One pyramid stage of a gallery in the layout the search wants, built once at gallery load.

    Attributes:
        rows: [N, H*W, C] features, channels last, centred by ``centre``, in the storage dtype (float32 or
            float16; float16 is converted to float32 block by block, all arithmetic is float32).
        sq_norms: [N, H*W] float32 squared norms of the centred rows (as stored).
        augmented: float32 banks only: the [N, H*W, C+1] rows with their squared norm appended, which
            ``rows`` and ``sq_norms`` are views of (the bank is held once). One plain GEMM of a block of it
            with the query's [-2q, 1] gives |g|^2 - 2 q.g without a separate broadcast of the norms.
        centre: [C] float32 mean feature of the stage (distances are translation invariant; centring limits
            the cancellation of |q|^2 + |g|^2 - 2 q.g).
        height: stage map height.
        width: stage map width.
    """

    rows: torch.Tensor
    sq_norms: torch.Tensor
    centre: torch.Tensor
    height: int
    width: int
    augmented: torch.Tensor | None = None

    @classmethod
    def from_features(cls, features: torch.Tensor, storage: torch.dtype = torch.float32) -> StageBank:
        """Build the bank of [N, C, H, W] gallery features (any float dtype, on the search device).

        Raises:
            ValueError: not 4-D, empty, or a storage dtype other than float32/float16.
        """
        if features.dim() != 4 or features.shape[0] == 0:
            raise ValueError(
                f"stage features must be a non-empty [N, C, H, W] tensor, got {list(features.shape)}"
            )
        if storage not in STORAGE_DTYPES:
            raise ValueError(f"storage dtype must be float32 or float16, got {storage}")
        n, c, h, w = features.shape
        f32 = features.float()
        centre = f32.mean(dim=(0, 2, 3))
        rows = (f32 - centre.view(1, c, 1, 1)).permute(0, 2, 3, 1).reshape(n, h * w, c)
        stored = rows.to(storage).contiguous()
        as_used = stored.float()
        sq_norms = (as_used * as_used).sum(2)
        if storage != torch.float32:
            return cls(stored, sq_norms.contiguous(), centre.contiguous(), h, w)
        augmented = torch.cat([stored, sq_norms.unsqueeze(2)], dim=2)
        return cls(augmented[:, :, :c], augmented[:, :, c], centre.contiguous(), h, w, augmented)

    @property
    def nbytes(self) -> int:
        """Memory the bank holds (rows, norms and centre)."""
        return sum(t.numel() * t.element_size() for t in (self.rows, self.sq_norms, self.centre))


def _query_block_rows(locations: int, device: torch.device) -> int:
    return min(locations, CPU_QUERY_BLOCK_ROWS) if device.type == "cpu" else locations


def _gallery_block_rows(query_rows: int, per_image: int, block_bytes: int) -> int:
    return max(1, min(per_image, block_bytes // (BYTES_PER_FLOAT32 * max(1, query_rows))))


def full_search(
    query: torch.Tensor, bank: StageBank, images: torch.Tensor, block_bytes: int, precision: str = "float32"
) -> torch.Tensor:
    """For each row of query [L, C], the exact L2 distance to its nearest row among the bank's ``images``.

    Query blocks x gallery blocks: each block's |g|^2 - 2 q.g (|q|^2 is constant per row, so the argmin needs
    no more) is written by one GEMM into a reused buffer of at most ``block_bytes`` and reduced at once to
    its per-row minimum (values only: an argmin per block costs 15x a plain minimum on CPU). With a float32
    bank the GEMM is a plain product of the query's [-2q, 1] and the bank's augmented [g, |g|^2] rows; a
    float16 bank's block is converted and augmented once per gallery block. The block that holds each
    row's minimum is searched again for the winner, whose distance is then recomputed by direct
    difference, so the result is exact float32.

    Args:
        query: [L, C] float32 query features (not centred).
        bank: the stage's gallery bank.
        images: [K] gallery image indices to search.
        block_bytes: upper bound of one distance block (CPU_BLOCK_BYTES: few, large GEMMs on CPU).
        precision: candidate-search arithmetic on CUDA (tf32, bfloat16); float32 everywhere else.
    """
    if images.numel() == 0:
        raise ValueError("no gallery images to search")
    fast = precision != "float32" and query.device.type == "cuda"
    q = query.float() - bank.centre
    locations, per_image = q.shape[0], bank.rows.shape[1]
    qb = _query_block_rows(locations, q.device)
    gb = _gallery_block_rows(qb, per_image, block_bytes)
    starts = list(range(0, per_image, gb))
    image_list = images.tolist()
    vals = torch.empty((len(image_list) * len(starts), locations), device=q.device)
    buf = torch.empty((qb, gb), device=q.device)
    q_aug = torch.cat([-2.0 * q, torch.ones((locations, 1), device=q.device)], dim=1)
    blk = 0
    for image in image_list:
        for gs in starts:
            g_aug = _augmented_block(bank, image, gs, gb)
            for qs in range(0, locations, qb):
                rows = min(qb, locations - qs)
                out = buf[:rows, : g_aug.shape[0]]
                if fast:
                    g = g_aug[:, :-1]
                    out.copy_(
                        g_aug[:, -1].unsqueeze(0) - 2.0 * _search_matmul(q[qs : qs + rows], g, precision)
                    )
                else:
                    torch.mm(q_aug[qs : qs + rows], g_aug.T, out=out)
                torch.amin(out, 1, out=vals[blk, qs : qs + rows])
            blk += 1
    winners = _winners(q_aug, bank, image_list, starts, gb, vals.argmin(0))
    exact: torch.Tensor = torch.linalg.vector_norm(q - winners, dim=1)
    return exact


def fused_search(
    query: torch.Tensor, bank: StageBank, images: torch.Tensor, library: nearest.NearestLibrary
) -> torch.Tensor:
    """:func:`full_search` by the fused C++ kernel (float32 bank on CPU): the minimum formed in the distance loop.

    The query is centred like the bank; the gallery rows are the bank's augmented rows of ``images`` (views,
    nothing copied), searched on torch's intra-op thread count. Exact float32 (the winner's distance is
    recomputed by direct difference).
    """
    if images.numel() == 0:
        raise ValueError("no gallery images to search")
    q = (query.float() - bank.centre).contiguous()
    segments = [nearest.Segment(bank.rows[i], bank.sq_norms[i]) for i in images.tolist()]
    dist, _ = library.search(q, segments, torch.get_num_threads())
    return dist


def select_fused(setting: str, device: torch.device) -> tuple[nearest.NearestLibrary | None, str]:
    """The fused kernel for ``runtime.pixel_kernel`` on ``device``, or None and why the torch kernel is used.

    Raises:
        nearest.NearestError: "fused" asked for where it cannot run (CUDA, or the library not built).
    """
    if setting == "torch":
        return None, "runtime.pixel_kernel = torch"
    if device.type != "cpu":
        if setting == "fused":
            raise nearest.NearestError(
                f"runtime.pixel_kernel: fused runs on CPU only, the device is {device}"
            )
        return None, f"the fused kernel runs on CPU only (device {device})"
    library, reason = nearest.load()
    if library is None and setting == "fused":
        raise nearest.NearestError(f"runtime.pixel_kernel: fused: {reason}")
    return library, reason


def _augmented_block(bank: StageBank, image: int, start: int, rows: int) -> torch.Tensor:
    """[rows, C+1] float32 gallery rows of one image from ``start``, each with its squared norm appended."""
    if bank.augmented is not None:
        return bank.augmented[image, start : start + rows]
    g = bank.rows[image, start : start + rows].float()  # float16 banks: converted once per gallery block
    return torch.cat([g, bank.sq_norms[image, start : start + rows].unsqueeze(1)], dim=1)


def _winners(
    q_aug: torch.Tensor,
    bank: StageBank,
    images: list[int],
    starts: list[int],
    gb: int,
    best_blk: torch.Tensor,
) -> torch.Tensor:
    """[L, C] float32 centred gallery row nearest each query row, given the block that holds its minimum.

    ``q_aug`` is the query's [-2q, 1]; the rows are sorted by their block once, so each block's rows are one
    contiguous slice searched by one GEMM.
    """
    order = torch.argsort(best_blk)
    blocks, counts = torch.unique_consecutive(best_blk[order], return_counts=True)
    q_sorted = q_aug[order]
    found, at = [], 0
    for blk, count in zip(blocks.tolist(), counts.tolist(), strict=True):
        g_aug = _augmented_block(bank, images[blk // len(starts)], starts[blk % len(starts)], gb)
        found.append(g_aug[torch.mm(q_sorted[at : at + count], g_aug.T).argmin(1), :-1])
        at += count
    winners = torch.empty((q_aug.shape[0], q_aug.shape[1] - 1), device=q_aug.device)
    winners[order] = torch.cat(found)
    return winners


def stage_radius(window_cells: int, stage: int) -> int:
    """Search radius in a stage's own cells for a radius of ``window_cells`` stride-4 cells (at least 1)."""
    return max(1, math.ceil(window_cells / (1 << stage)))


def _window_penalty(
    ys: range, xs: range, region_y: range, region_x: range, radius: int, device: torch.device
) -> torch.Tensor:
    """[tile cells, region cells] 0 where a region cell lies within ``radius`` of a tile cell, else +inf."""
    qy, qx = torch.tensor(ys, device=device), torch.tensor(xs, device=device)
    ry, rx = torch.tensor(region_y, device=device), torch.tensor(region_x, device=device)
    near_y = (ry.unsqueeze(0) - qy.unsqueeze(1)).abs() <= radius
    near_x = (rx.unsqueeze(0) - qx.unsqueeze(1)).abs() <= radius
    near = near_y[:, None, :, None] & near_x[None, :, None, :]  # [ty, tx, ry, rx]
    zero = torch.zeros((), device=device)
    return torch.where(near, zero, torch.full((), float("inf"), device=device)).reshape(
        len(ys) * len(xs), len(region_y) * len(region_x)
    )


def window_search(
    query: torch.Tensor, bank: StageBank, images: torch.Tensor, radius: int, chunk_bytes: int
) -> torch.Tensor:
    """Exact L2 distance from each location of query [C, H, W] to its nearest gallery feature nearby.

    Nearby: within ``radius`` cells in both directions of the same location, in any of the bank's ``images``.
    The map is cut into WINDOW_TILE_CELLS square tiles; a tile's queries are matched by one GEMM against the
    tile's region grown by ``radius`` in each of the images (taken in chunks whose region copy stays under
    ``chunk_bytes``), cells outside a query's window masked with +inf. The winner's distance is recomputed by
    direct difference, so the result is exact float32.

    Returns:
        [H, W] distances.
    """
    if images.numel() == 0:
        raise ValueError("no gallery images to search")
    c, h, w = query.shape
    if (h, w) != (bank.height, bank.width):
        raise ValueError(f"query map {h}x{w} does not match the gallery's {bank.height}x{bank.width}")
    q = query.float().permute(1, 2, 0) - bank.centre  # [H, W, C]
    gal = bank.rows.view(bank.rows.shape[0], h, w, c)
    norms = bank.sq_norms.view(-1, h, w)
    image_list = images.tolist()
    region_max = (WINDOW_TILE_CELLS + 2 * radius) ** 2
    per_chunk = max(1, chunk_bytes // (BYTES_PER_FLOAT32 * region_max * c))
    out = torch.empty((h, w), device=q.device)
    for ty in range(0, h, WINDOW_TILE_CELLS):
        for tx in range(0, w, WINDOW_TILE_CELLS):
            ys, xs = range(ty, min(h, ty + WINDOW_TILE_CELLS)), range(tx, min(w, tx + WINDOW_TILE_CELLS))
            ry = range(max(0, ty - radius), min(h, ys.stop + radius))
            rx = range(max(0, tx - radius), min(w, xs.stop + radius))
            penalty = _window_penalty(ys, xs, ry, rx, radius, q.device)
            qt = q[ys.start : ys.stop, xs.start : xs.stop].reshape(-1, c)
            best = torch.full((qt.shape[0],), float("inf"), device=q.device)
            winner = torch.zeros_like(qt)
            for start in range(0, len(image_list), per_chunk):
                chunk = image_list[start : start + per_chunk]
                region = gal[chunk, ry.start : ry.stop, rx.start : rx.stop].float().reshape(-1, c)
                gn = norms[chunk, ry.start : ry.stop, rx.start : rx.stop].reshape(1, len(chunk), -1)
                part = torch.addmm(gn.reshape(1, -1), qt, region.T, alpha=-2.0).view(
                    qt.shape[0], len(chunk), -1
                )
                val, arg = part.add_(penalty.unsqueeze(1)).view(qt.shape[0], -1).min(1)
                better = val < best
                best = torch.where(better, val, best)
                winner = torch.where(better.unsqueeze(1), region[arg], winner)
            dist = torch.linalg.vector_norm(qt - winner, dim=1)
            out[ys.start : ys.stop, xs.start : xs.stop] = dist.view(len(ys), len(xs))
    return out


@dataclass(frozen=True)
class Search:
    """How pixel matching searches one stage: ``full`` or ``window`` with a radius in the stage's cells."""

    mode: str = "full"
    radius: int = 0
    block_bytes: int = CPU_BLOCK_BYTES  # one distance block of the full search
    chunk_bytes: int = 64 << 20  # one difference chunk of the window search
    precision: str = "float32"  # candidate-search arithmetic of the full search (tf32/bfloat16 on CUDA)
    fused: nearest.NearestLibrary | None = None  # the full search by the fused kernel (float32 banks on CPU)


def stage_maps(test: torch.Tensor, bank: StageBank, neighbours: torch.Tensor, search: Search) -> torch.Tensor:
    """Per-location nearest-feature distance for one pyramid stage (kappa = 1), exact float32.

    Args:
        test: [B, C, H, W] test features.
        bank: the stage's gallery bank.
        neighbours: [B, K] gallery indices searched for each test image.
        search: full search (fused kernel or torch) or a spatial window.

    Returns:
        [B, H, W] distances.
    """
    b, c, h, w = test.shape
    out = torch.empty((b, h, w), device=test.device)
    for i in range(b):
        if search.mode == "window":
            out[i] = window_search(test[i], bank, neighbours[i], search.radius, search.chunk_bytes)
        elif search.fused is not None and bank.augmented is not None:
            out[i] = fused_search(test[i].reshape(c, h * w).T, bank, neighbours[i], search.fused).view(h, w)
        else:
            q = test[i].reshape(c, h * w).T
            out[i] = full_search(q, bank, neighbours[i], search.block_bytes, search.precision).view(h, w)
    return out
