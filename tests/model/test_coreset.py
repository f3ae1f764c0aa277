"""Greedy coreset subsampling against a float64 reference: order, determinism, blocks, bounded output."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inspector.model import coreset


def ref_greedy(rows: np.ndarray, count: int, start: int) -> list[int]:
    """Float64 greedy k-centre from ``start``: each next row is the farthest from those chosen (lowest index on ties)."""
    nearest = np.full(rows.shape[0], np.inf)
    chosen, pick = [], start
    for _ in range(count):
        chosen.append(pick)
        nearest = np.minimum(nearest, ((rows - rows[pick]) ** 2).sum(1))
        pick = int(np.argmax(nearest))
    return chosen


def _start(seed: int, n: int) -> int:
    return int(torch.randint(n, (1,), generator=torch.Generator().manual_seed(seed)))


@pytest.mark.parametrize(("n", "c", "count"), [(50, 3, 10), (200, 24, 37), (7, 2, 6)])
def test_greedy_coreset_chooses_the_rows_the_float64_greedy_reference_chooses(
    n: int, c: int, count: int
) -> None:
    rows = np.random.default_rng(n).normal(size=(n, c)) * 3.0 + 10.0
    got = coreset.greedy_coreset(torch.tensor(rows).float(), count, torch.Generator().manual_seed(5))
    assert got.tolist() == ref_greedy(rows, count, _start(5, n))


def test_greedy_coreset_covers_outliers_first_and_is_reproducible_from_its_seed() -> None:
    rows = torch.zeros(100, 2)
    rows[:, 0] = torch.linspace(0, 1, 100)
    rows[37] = torch.tensor([50.0, 50.0])  # an outlier: the farthest from anything, chosen at once
    first = coreset.greedy_coreset(rows, 3, torch.Generator().manual_seed(1))
    assert 37 in first[:2].tolist()
    again = coreset.greedy_coreset(rows, 3, torch.Generator().manual_seed(1))
    assert first.tolist() == again.tolist()


def test_a_coreset_keeps_at_least_one_and_at_most_every_row() -> None:
    assert coreset.coreset_size(1000, 0.01) == 10
    assert coreset.coreset_size(1000, 0.0001) == 1
    assert coreset.coreset_size(1000, 1.0) == 1000
    assert coreset.coreset_size(101, 0.1) == 11
    assert coreset.greedy_coreset(torch.randn(5, 2), 5, torch.Generator()).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="coreset of 0 rows"):
        coreset.greedy_coreset(torch.zeros(3, 2), 0, torch.Generator())


def test_stage_coreset_works_in_blocks_of_whole_images_and_groups_rows_by_image(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(coreset, "CORESET_BLOCK_ROWS", 40)  # 16 locations per image: two images per block
    feats = torch.randn(5, 3, 4, 4)
    done: list[int] = []
    rows, counts = coreset.stage_coreset(feats, 0.25, seed=3, progress=done.append)
    assert done == [2, 2, 1]  # three blocks of whole images
    assert counts and len(counts) == 5 and sum(counts) == rows.shape[0] == 8 + 8 + 4
    flat = feats.permute(0, 2, 3, 1).reshape(5, 16, 3)
    at = 0
    for image, count in enumerate(counts):  # every kept row is a row of its image, in location order
        kept = rows[at : at + count]
        index = [int((flat[image] - r).abs().sum(1).argmin()) for r in kept]
        assert index == sorted(index)
        torch.testing.assert_close(kept, flat[image, index])
        at += count
    again, same = coreset.stage_coreset(feats, 0.25, seed=3)
    assert same == counts and torch.equal(again, rows)


def test_wide_features_are_chosen_on_a_projection_but_kept_whole() -> None:
    feats = torch.randn(2, coreset.PROJECTED_DIMS + 20, 3, 3)
    rows, counts = coreset.stage_coreset(feats, 0.5, seed=0)
    assert rows.shape == (sum(counts), coreset.PROJECTED_DIMS + 20)
    flat = feats.permute(0, 2, 3, 1).reshape(-1, coreset.PROJECTED_DIMS + 20)
    assert all(bool((flat == r).all(1).any()) for r in rows)


def test_memory_bank_records_fraction_seed_and_rows_per_image_of_every_stage() -> None:
    stages = {0: torch.randn(3, 4, 4, 4), 2: torch.randn(3, 8, 2, 2)}
    banks, record = coreset.memory_bank(stages, 0.5, seed=9)
    assert set(banks) == {0, 2} and record.seed == 9 and record.coreset_fraction == 0.5
    assert {k: sum(v) for k, v in record.rows_per_image.items()} == {"stage0": 24, "stage2": 6}
    assert banks[2].shape == (6, 8)
