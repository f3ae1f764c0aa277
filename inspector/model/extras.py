"""A gallery file's optional tensors: each stage's memory bank and the inspection region, named and shaped."""

from __future__ import annotations

import torch

from inspector.model.manifest import GalleryManifest

REGION_NAME = "region"  # [crop, crop] 1 = inspected, 0 = ignored


def bank_name(stage: int) -> str:
    """Tensor name of a stage's memory bank, e.g. ``bank0``."""
    return f"bank{stage}"


def named_extras(banks: dict[int, torch.Tensor], region: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """The optional tensors under their file names."""
    out = {bank_name(s): t for s, t in banks.items()}
    if region is not None:
        out[REGION_NAME] = region
    return out


def extra_shapes(manifest: GalleryManifest, channels: dict[int, int]) -> dict[str, list[int]]:
    """The shape each optional tensor of a manifest must have, given each stage's channel count."""
    shapes: dict[str, list[int]] = {}
    if manifest.memory_bank is not None:
        for s in manifest.stages:
            rows = sum(manifest.memory_bank.rows_per_image[f"stage{s}"])
            shapes[bank_name(s)] = [rows, channels[s]]
    if manifest.region is not None:
        crop = manifest.preprocessing.crop_px
        shapes[REGION_NAME] = [crop, crop]
    return shapes


def stored_channels(manifest: GalleryManifest) -> dict[int, int]:
    """Each stage's channel count as its ``stage_shapes`` records it (0 when not recorded)."""
    return {s: manifest.stage_shapes.get(f"stage{s}", [0])[0] for s in manifest.stages}
