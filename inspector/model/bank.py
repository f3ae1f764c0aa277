"""The memory bank (``pixel_search = memory_bank``): a coreset of every gallery location, searched exactly."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from inspector.model import nearest

BYTES_PER_FLOAT32 = 4


@dataclass(frozen=True)
class MemoryBank:
    """One stage's memory bank in the layout the search wants, built once at gallery load.

    Attributes:
        augmented: [M, C+1] float32 centred rows with their squared norm appended (``rows`` and
            ``sq_norms`` are views of it: one plain GEMM with a query's [-2q, 1] gives |g|^2 - 2 q.g).
        rows: [M, C] the centred rows, grouped by gallery image in source order.
        sq_norms: [M] their squared norms.
        centre: [C] the mean row (queries are centred on it too).
        offsets: N+1 row offsets: image i's rows are ``offsets[i]:offsets[i+1]``.
    """

    augmented: torch.Tensor
    rows: torch.Tensor
    sq_norms: torch.Tensor
    centre: torch.Tensor
    offsets: tuple[int, ...]

    @classmethod
    def from_rows(cls, rows: torch.Tensor, counts: Sequence[int]) -> MemoryBank:
        """The bank of coreset rows [M, C] (any float dtype, on the search device), ``counts[i]`` of image i.

        Raises:
            ValueError: not 2-D, empty, or the counts do not add up to the rows.
        """
        if rows.dim() != 2 or rows.shape[0] == 0:
            raise ValueError(f"memory bank rows must be a non-empty [M, C] tensor, got {list(rows.shape)}")
        if sum(counts) != rows.shape[0] or any(c < 0 for c in counts):
            raise ValueError(f"row counts add up to {sum(counts)}, the bank has {rows.shape[0]} rows")
        f32 = rows.float()
        centre = f32.mean(0)
        centred = f32 - centre
        c = centred.shape[1]
        augmented = torch.cat([centred, (centred * centred).sum(1, keepdim=True)], 1).contiguous()
        offsets = [0]
        for count in counts:
            offsets.append(offsets[-1] + int(count))
        return cls(augmented, augmented[:, :c], augmented[:, c], centre.contiguous(), tuple(offsets))

    @property
    def images(self) -> int:
        """Gallery images the bank's rows come from."""
        return len(self.offsets) - 1

    @property
    def nbytes(self) -> int:
        """Memory the bank holds."""
        return (self.augmented.numel() + self.centre.numel()) * BYTES_PER_FLOAT32

    def ranges(self, exclude: Sequence[int] = ()) -> list[tuple[int, int]]:
        """Row ranges [start, stop) of every image not in ``exclude``, adjacent ones merged.

        Raises:
            ValueError: every row is excluded.
        """
        left_out = set(exclude)
        out: list[tuple[int, int]] = []
        for image in range(self.images):
            start, stop = self.offsets[image], self.offsets[image + 1]
            if image in left_out or start == stop:
                continue
            if out and out[-1][1] == start:
                out[-1] = (out[-1][0], stop)
            else:
                out.append((start, stop))
        if not out:
            raise ValueError("no memory bank rows left to search")
        return out


def bank_search(
    query: torch.Tensor,
    bank: MemoryBank,
    exclude: Sequence[int] = (),
    fused: nearest.NearestLibrary | None = None,
    block_bytes: int = 64 << 20,
) -> torch.Tensor:
    """For each row of query [L, C], the exact L2 distance to its nearest bank row outside ``exclude``'s images.

    The fused kernel walks the allowed row ranges as segments (CPU); elsewhere a blocked GEMM keeps a
    running minimum with its index. Either way the winner's distance is recomputed by direct difference, so
    the result is exact float32.

    Args:
        query: [L, C] float32 query features (not centred).
        bank: the stage's memory bank.
        exclude: gallery images whose rows are left out (leave-out calibration).
        fused: the fused kernel, or None for the torch search.
        block_bytes: upper bound of one distance block of the torch search.
    """
    q = (query.float() - bank.centre).contiguous()
    ranges = bank.ranges(exclude)
    if fused is not None and q.device.type == "cpu":
        segments = [nearest.Segment(bank.rows[a:b], bank.sq_norms[a:b]) for a, b in ranges]
        dist, _ = fused.search(q, segments, torch.get_num_threads())
        return dist
    return _torch_search(q, bank, ranges, block_bytes)


def _torch_search(
    q: torch.Tensor, bank: MemoryBank, ranges: list[tuple[int, int]], block_bytes: int
) -> torch.Tensor:
    """:func:`bank_search` by blocked GEMMs of the centred query ``q`` (any device)."""
    locations = q.shape[0]
    q_aug = torch.cat([-2.0 * q, torch.ones((locations, 1), device=q.device)], dim=1)
    step = max(1, block_bytes // (BYTES_PER_FLOAT32 * max(1, locations)))
    best = torch.full((locations,), float("inf"), device=q.device)
    best_row = torch.zeros(locations, dtype=torch.long, device=q.device)
    for a, b in ranges:
        for start in range(a, b, step):
            stop = min(b, start + step)
            val, arg = torch.mm(q_aug, bank.augmented[start:stop].T).min(1)
            better = val < best
            best = torch.where(better, val, best)
            best_row = torch.where(better, arg + start, best_row)
    exact: torch.Tensor = torch.linalg.vector_norm(q - bank.rows[best_row], dim=1)
    return exact


def bank_maps(
    test: torch.Tensor,
    bank: MemoryBank,
    exclude: Sequence[Sequence[int]] | None = None,
    fused: nearest.NearestLibrary | None = None,
    block_bytes: int = 64 << 20,
) -> torch.Tensor:
    """Per-location nearest-bank-row distance for one stage's [B, C, H, W] test features: [B, H, W].

    Without ``exclude`` the whole batch is one search; with it, image i is searched without the rows of
    the gallery images ``exclude[i]`` (its own, when calibrating leave-one-out).
    """
    b, c, h, w = test.shape
    rows = test.permute(0, 2, 3, 1).reshape(b, h * w, c)
    if exclude is None:
        return bank_search(rows.reshape(b * h * w, c), bank, (), fused, block_bytes).view(b, h, w)
    out = torch.empty((b, h, w), device=test.device)
    for i in range(b):
        out[i] = bank_search(rows[i], bank, exclude[i], fused, block_bytes).view(h, w)
    return out
