"""Tests for inspector.model.settings: the settings a gallery records, read back and checked against a config."""

from __future__ import annotations

from pathlib import Path

from inspector.config.calibration import CalibrationConfig
from inspector.config.load import load_config
from inspector.config.model import ModelConfig
from inspector.model.gallery import read_manifest
from inspector.model.settings import (
    daemon_config_conflicts,
    gallery_setting_conflicts,
    settings_from_manifest,
)
from tests.support import SyntheticGallery


def test_the_settings_read_back_from_a_manifest_are_the_ones_it_was_built_with(
    synthetic_gallery: SyntheticGallery,
) -> None:
    assert settings_from_manifest(read_manifest(synthetic_gallery.path)) == synthetic_gallery.model


def test_only_keys_given_explicitly_are_compared_with_the_gallery(
    synthetic_gallery: SyntheticGallery,
) -> None:
    manifest = read_manifest(synthetic_gallery.path)
    path = synthetic_gallery.path
    # Defaults differ from the gallery's settings (crop 224 vs 128) but nobody set them: no conflict.
    assert gallery_setting_conflicts(ModelConfig(), CalibrationConfig(), path, manifest) == []
    same = ModelConfig(crop_px=synthetic_gallery.model.crop_px, resize_px=synthetic_gallery.model.resize_px)
    assert gallery_setting_conflicts(same, CalibrationConfig(), path, manifest) == []
    other = ModelConfig(stages=(0, 1), stage_fusion="scaled_mean")
    lines = gallery_setting_conflicts(other, CalibrationConfig(target_false_reject_rate=0.05), path, manifest)
    assert [line.split(":")[0] for line in lines] == [
        "model.stage_fusion", "model.stages", "calibration.target_false_reject_rate"
    ]  # fmt: skip
    assert all(str(path) in line for line in lines)


def test_a_daemon_config_is_checked_against_each_gallery_once(
    synthetic_gallery: SyntheticGallery, tmp_path: Path
) -> None:
    toml = tmp_path / "d.toml"
    toml.write_text(
        f'[model]\nimage_k = 99\n[worker]\ngallery = "{synthetic_gallery.path}"\n'
        '[[cameras]]\nname = "a"\nsource = "0"\n[[cameras]]\nname = "b"\nsource = "1"\n',
        encoding="utf-8",
    )
    (line,) = daemon_config_conflicts(load_config(toml), read_manifest)
    assert line.startswith("model.image_k: 99 here, but gallery ")
