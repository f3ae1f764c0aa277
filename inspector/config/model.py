"""The ``[model]`` section: backbone, preprocessing and SPADE settings, the ones a gallery records."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from inspector.config.base import StrictModel

BackboneName = Literal[
    "efficientnet_lite0",
    "efficientnet_lite1",
    "efficientnet_lite2",
    "resnet18",
    "resnet50",
    "wide_resnet50_2",
]
ImageScoreMode = Literal["knn_pooled", "map_max", "map_top_mean", "knn_plus_map"]
StageFusion = Literal["mean", "scaled_mean", "scaled_geomean"]
PixelSearch = Literal["full", "window", "memory_bank"]
VALID_STAGES = (0, 1, 2)
DEFAULT_RESIZE_PX = 224
UNSET_CROP_PX = 0  # replaced by resize_px after validation: no crop
DEFAULT_CORESET_FRACTION = 0.01
MOVED_TO_RUNTIME = {
    "device": "runtime.device",
    "precision": "runtime.precision",
    "batch_size": "runtime.batch_size",
    "distance_chunk_mb": "runtime.distance_chunk_mb",
    "weights_path": "runtime.weights.<backbone>",
}


class ModelConfig(StrictModel):
    """What a gallery is built with and records; a live frame is always scored with its gallery's values.

    ``inspector gallery build`` and ``inspector eval`` take these from the config. The daemon takes them from
    each gallery: a key set in the daemon's config that disagrees with a gallery is refused at start-up.
    """

    backbone: BackboneName = Field("efficientnet_lite0", description="Feature extractor.")
    resize_px: int = Field(
        DEFAULT_RESIZE_PX, ge=32, le=4096, description="Side of the square the frame is resized into."
    )
    crop_px: int = Field(
        UNSET_CROP_PX,
        ge=32,
        le=4096,
        description="Centre crop side in pixels. Unset: no crop, the whole frame is inspected (crop_px = "
        "resize_px). The MVTec/SPADE protocol crops 224 of 256, leaving a band of about 6% of the width and "
        "height on each side of the frame uninspected.",
    )
    keep_aspect: bool = Field(
        True,
        description="Letterbox (default) instead of squashing: scale the longer side to resize_px keeping the "
        "aspect ratio, pad to a resize_px square with black (never scored), then take the centre crop_px "
        "square. False squashes the frame into the square (the MVTec protocol; docs/quality.md compares both).",
    )
    image_k: int = Field(50, ge=1, le=10_000, description="k nearest gallery images for the image score.")
    pixel_k: int = Field(10, ge=1, le=10_000, description="K nearest gallery images searched per location.")
    stages: tuple[int, ...] = Field(
        (0, 1, 2), min_length=1, max_length=3, description="Pyramid stages used: 0=stride 4, 1=8, 2=16."
    )
    blur_sigma_px: float = Field(4.0, ge=0.0, le=64.0, description="Gaussian blur sigma on the map (0=off).")
    neighbourhood_px: int = Field(
        3,
        ge=1,
        le=7,
        description="Average each feature with its n x n neighbourhood before matching (1=off).",
    )
    image_score: ImageScoreMode = Field(
        "map_max",
        description="knn_pooled: the paper's kNN distance of the pooled feature; map_max: max of the anomaly "
        "map; map_top_mean: mean of the top 1% of the map; knn_plus_map: sum of both, each normalised by its "
        "calibration median.",
    )
    stage_fusion: StageFusion = Field(
        "scaled_geomean",
        description="How per-stage maps are combined: mean (the paper), scaled_mean (each stage divided by its "
        "mean distance on normal images first), scaled_geomean (geometric mean of the scaled stages).",
    )
    pixel_search: PixelSearch = Field(
        "full",
        description="full: each location is matched against every location of the K nearest gallery images "
        "(SPADE); window: only against locations within window_cells of the same place (aligned, fixtured "
        "parts only; see docs/performance.md); memory_bank: against a coreset of every location of every "
        "gallery image (PatchCore-style; coreset_fraction of them, chosen at gallery build).",
    )
    coreset_fraction: float = Field(
        DEFAULT_CORESET_FRACTION,
        gt=0.0,
        le=1.0,
        description="pixel_search = memory_bank: share of each stage's gallery locations kept by greedy "
        "(k-centre) coreset subsampling at gallery build (1 = every location).",
    )
    min_defect_area_px: int = Field(
        0,
        ge=0,
        le=100_000_000,
        description="A part also fails when a defect region (a connected region of the mask) covers at least "
        "this many frame pixels, whatever its image score; 0: only the image score decides.",
    )
    window_cells: int = Field(
        2,
        ge=1,
        le=64,
        description="pixel_search = window: search radius in stride-4 cells, ceil(window_cells / 2^stage) "
        "cells at stage 1 and 2.",
    )

    @model_validator(mode="before")
    @classmethod
    def _runtime_keys_moved(cls, data: Any) -> Any:
        moved = [k for k in MOVED_TO_RUNTIME if isinstance(data, dict) and k in data]
        if moved:
            where = ", ".join(f"{k} -> {MOVED_TO_RUNTIME[k]}" for k in moved)
            raise ValueError(f"run-time settings belong in the [runtime] section, not [model]: {where}")
        return data

    @model_validator(mode="after")
    def _crop_fits(self) -> ModelConfig:
        if "crop_px" not in self.model_fields_set:
            self.__dict__["crop_px"] = self.resize_px  # the whole frame; still "unset" for gallery checks
        if self.crop_px > self.resize_px:
            raise ValueError(f"crop_px ({self.crop_px}) must not exceed resize_px ({self.resize_px})")
        if len(set(self.stages)) != len(self.stages) or any(s not in VALID_STAGES for s in self.stages):
            raise ValueError(f"stages must be distinct values from 0, 1, 2; got {self.stages}")
        return self
