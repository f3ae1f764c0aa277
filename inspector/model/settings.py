"""Model settings and gallery manifests: the records a gallery writes, read back, and checked against a config."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from inspector.config.calibration import CalibrationConfig
from inspector.config.model import DEFAULT_CORESET_FRACTION, ModelConfig
from inspector.config.root import InspectorConfig
from inspector.model.backbone import BackboneSpec
from inspector.model.gallery import stage_name
from inspector.model.header import GalleryError
from inspector.model.manifest import GalleryManifest, Preprocessing, SpadeParams
from inspector.model.preprocess import PreprocessSpec


def preprocess_spec(config: ModelConfig, spec: BackboneSpec) -> PreprocessSpec:
    """The preprocessing a backbone needs at the configured sizes."""
    return PreprocessSpec(config.resize_px, config.crop_px, config.keep_aspect, spec.mean, spec.std)


def manifest_preprocessing(config: ModelConfig, spec: BackboneSpec) -> Preprocessing:
    """The manifest record of that preprocessing."""
    return Preprocessing(
        resize_px=config.resize_px,
        crop_px=config.crop_px,
        keep_aspect=config.keep_aspect,
        input_scale=spec.input_scale,
        mean=spec.mean,
        std=spec.std,
        color="rgb",
    )


def spade_params(config: ModelConfig) -> SpadeParams:
    """The manifest record of the SPADE parameters."""
    return SpadeParams(
        image_k=config.image_k,
        pixel_k=config.pixel_k,
        blur_sigma_px=config.blur_sigma_px,
        neighbourhood_px=config.neighbourhood_px,
        image_score=config.image_score,
        stage_fusion=config.stage_fusion,
        pixel_search=config.pixel_search,
        window_cells=config.window_cells,
        # recorded only where they apply, so a gallery without them keeps the manifest (and hash) it had
        coreset_fraction=config.coreset_fraction if config.pixel_search == "memory_bank" else None,
        min_defect_area_px=config.min_defect_area_px or None,
    )


def settings_from_manifest(manifest: GalleryManifest) -> ModelConfig:
    """The model settings a gallery was built and calibrated with.

    Raises:
        ValueError: the manifest names a backbone or mode this build does not know.
    """
    return ModelConfig.model_validate(_recorded(manifest))


def _recorded(manifest: GalleryManifest) -> dict[str, Any]:
    p, s = manifest.preprocessing, manifest.spade
    return {
        "backbone": manifest.backbone,
        "resize_px": p.resize_px,
        "crop_px": p.crop_px,
        "keep_aspect": p.keep_aspect,
        "stages": tuple(manifest.stages),
        "image_k": s.image_k,
        "pixel_k": s.pixel_k,
        "blur_sigma_px": s.blur_sigma_px,
        "neighbourhood_px": s.neighbourhood_px,
        "image_score": s.image_score,
        "stage_fusion": s.stage_fusion,
        "pixel_search": s.pixel_search,
        "window_cells": s.window_cells,
        "coreset_fraction": s.coreset_fraction or DEFAULT_CORESET_FRACTION,
        "min_defect_area_px": s.min_defect_area_px or 0,
    }


def gallery_setting_conflicts(
    model: ModelConfig, calibration: CalibrationConfig, path: Path, manifest: GalleryManifest
) -> list[str]:
    """Keys set in a daemon's ``[model]`` / ``[calibration]`` that disagree with what a gallery recorded.

    Only keys given explicitly (in the file or the environment) are compared: the daemon always scores with
    the gallery's values, so a different value there would be ignored, and is refused instead.

    Returns:
        One line per disagreement, naming the field, both values and the gallery file.
    """
    recorded = _recorded(manifest)
    problems = [
        f"model.{key}: {getattr(model, key)!r} here, but gallery {path} was built with {recorded[key]!r} "
        "(the daemon scores with the gallery's settings: remove the key or rebuild the gallery)"
        for key in _set_fields(model)
        if getattr(model, key) != recorded[key]
    ]
    cal = manifest.calibration
    for key in _set_fields(calibration):
        found = getattr(cal, key, None) if cal is not None else None
        if found is not None and getattr(calibration, key) != found:
            problems.append(
                f"calibration.{key}: {getattr(calibration, key)!r} here, but gallery {path} was calibrated at "
                f"{found!r} (re-calibrate it with inspector gallery calibrate, or remove the key)"
            )
    return problems


def daemon_config_conflicts(
    config: InspectorConfig, manifest_of: Callable[[Path], GalleryManifest]
) -> list[str]:
    """:func:`gallery_setting_conflicts` for every gallery a daemon configuration uses (each line once)."""
    problems: list[str] = []
    for path in dict.fromkeys(config.product_galleries().values()):
        for line in gallery_setting_conflicts(config.model, config.calibration, path, manifest_of(path)):
            if line not in problems:
                problems.append(line)
    return problems


def _set_fields(section: ModelConfig | CalibrationConfig) -> Iterable[str]:
    return sorted(section.model_fields_set)


def check_feature_shapes(
    path: Path, manifest: GalleryManifest, spec: BackboneSpec, config: ModelConfig
) -> None:
    """Refuse a gallery whose stored feature shapes cannot come from this backbone at these sizes.

    Raises:
        GalleryError: a stored stage has another channel count than the backbone gives.
    """
    want = {"pooled": spec.pooled_dim, **{stage_name(s): spec.stage_channels[s] for s in config.stages}}
    for name, channels in want.items():
        found = manifest.stage_shapes.get(name)
        if found is not None and found[0] != channels:
            raise GalleryError(path, f"{name} has {found[0]} channels, backbone {spec.name} gives {channels}")
