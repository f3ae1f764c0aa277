"""Tests for the gallery file format: round trips, every corruption refused with its reason, no pickle ever."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import save_file

from inspector.model.digest import file_sha256
from inspector.model.gallery import (
    load_gallery,
    read_manifest,
    save_gallery,
    update_calibration,
)
from inspector.model.header import GalleryError
from inspector.model.manifest import (
    GALLERY_FORMAT_VERSION,
    Calibration,
    GalleryManifest,
    Preprocessing,
    SourceImage,
    SpadeParams,
)

N_IMAGES = 5
POOLED_DIM = 16
STAGE_SHAPES = {0: (4, 8, 8), 1: (6, 4, 4), 2: (8, 2, 2)}
FP16_RTOL = 1e-3
WEIGHTS_SHA = "ab" * 32
CREATED_AT = "2024-05-01T12:00:00Z"
PREPROCESSING = Preprocessing(
    resize_px=256,
    crop_px=224,
    keep_aspect=False,
    input_scale="imagenet",
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
    color="rgb",
)


def _manifest(n: int = N_IMAGES, stages: tuple[int, ...] = (0, 1, 2)) -> GalleryManifest:
    return GalleryManifest(
        backbone="efficientnet_lite0",
        weights_sha256=WEIGHTS_SHA,
        preprocessing=PREPROCESSING,
        stages=list(stages),
        spade=SpadeParams(
            image_k=3, pixel_k=3, blur_sigma_px=4.0, neighbourhood_px=1, image_score="knn_pooled"
        ),
        image_count=n,
        sources=[
            SourceImage(name=f"good_{i}.png", sha256=hashlib.sha256(bytes([i])).hexdigest()) for i in range(n)
        ],
        created_at=CREATED_AT,
    )


def _features(
    n: int = N_IMAGES, stages: tuple[int, ...] = (0, 1, 2), seed: int = 0
) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    pooled = torch.randn(n, POOLED_DIM, generator=gen)
    return pooled, {s: torch.randn(n, *STAGE_SHAPES[s], generator=gen) for s in stages}


def _spec_hash(tensors: dict[str, torch.Tensor]) -> str:
    """The documented content hash, re-implemented independently of the module."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        digest.update(name.encode() + b"\0")
        digest.update(str(t.dtype).removeprefix("torch.").encode() + b"\0")
        digest.update(",".join(map(str, t.shape)).encode() + b"\0")
        digest.update(t.numpy().tobytes())
    return digest.hexdigest()


def spec_gallery_hash(manifest: dict[str, Any]) -> str:
    """The documented gallery hash, re-implemented independently of the module."""
    text = json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(b"inspector-gallery\0" + text.encode()).hexdigest()


def _write_crafted(
    path: Path, tensors: dict[str, torch.Tensor], manifest: dict[str, Any] | str | None
) -> None:
    """Write a safetensors file by hand; a dict manifest gets correct content and gallery hashes."""
    metadata = None
    if isinstance(manifest, dict):
        manifest = {**manifest, "content_sha256": _spec_hash(tensors)}
        metadata = {
            "inspector_manifest": json.dumps(manifest),
            "inspector_gallery_sha256": spec_gallery_hash(manifest),
        }
    elif manifest is not None:
        metadata = {"inspector_manifest": manifest}
    save_file(tensors, str(path), metadata=metadata)


def _stored(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """A valid gallery's manifest dict and tensors, to mutate into crafted files."""
    pooled, stages = _features()
    manifest = save_gallery(path, pooled, stages, _manifest())
    return manifest.model_dump(mode="json"), {"pooled": pooled, **{f"stage{s}": t for s, t in stages.items()}}


def _refused(path: Path, **kwargs: Any) -> str:
    with pytest.raises(GalleryError) as info:
        load_gallery(path, **kwargs)
    assert str(path) in str(info.value)
    return info.value.reason


def test_float32_round_trip_is_exact_and_manifest_is_filled(tmp_path: Path) -> None:
    pooled, stages = _features()
    path = tmp_path / "g.safetensors"
    written = save_gallery(path, pooled, stages, _manifest())
    gallery = load_gallery(
        path,
        expect_backbone="efficientnet_lite0",
        expect_weights_sha256=WEIGHTS_SHA,
        expect_preprocessing=PREPROCESSING,
    )
    assert torch.equal(gallery.pooled, pooled)
    assert set(gallery.stages) == {0, 1, 2}
    for s, t in stages.items():
        assert torch.equal(gallery.stages[s], t) and gallery.stages[s].dtype == torch.float32
    assert gallery.manifest == written and gallery.manifest.storage_dtype == "float32"
    assert written.stage_shapes == {
        "pooled": [POOLED_DIM],
        **{f"stage{s}": list(STAGE_SHAPES[s]) for s in stages},
    }
    assert written.content_sha256 == _spec_hash(
        {"pooled": pooled, "stage0": stages[0], "stage1": stages[1], "stage2": stages[2]}
    )
    assert gallery.content_hash == gallery.sha256 == spec_gallery_hash(written.model_dump(mode="json"))
    assert [p.name for p in tmp_path.iterdir()] == ["g.safetensors"]


# Loads a gallery, then truncates and rewrites its file in place (as `cp new old` does), then reads every tensor.
REWRITE_IN_PLACE = r"""
import sys
from pathlib import Path
from inspector.model.gallery import load_gallery
path = Path(sys.argv[1])
gallery = load_gallery(path)
data = path.read_bytes()
with path.open("r+b") as handle:
    handle.truncate(0)
    handle.flush()
    total = float(gallery.pooled.sum()) + sum(float(t.sum()) for t in gallery.stages.values())
    handle.write(data)
print("read", total == total)
"""


def test_a_loaded_gallery_survives_its_file_being_rewritten_in_place(tmp_path: Path) -> None:
    """Tensors are never left memory-mapped: a truncated file would take their pages away (SIGBUS)."""
    pooled, stages = _features()
    path = tmp_path / "g.safetensors"
    save_gallery(path, pooled, stages, _manifest())
    proc = subprocess.run(
        [sys.executable, "-c", REWRITE_IN_PLACE, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (proc.returncode, proc.stdout.strip()) == (0, "read True"), proc.stderr


def _data_bytes(path: Path) -> int:
    """Bytes after the safetensors header."""
    data = path.read_bytes()
    return len(data) - 8 - int.from_bytes(data[:8], "little")


def test_float16_round_trip_within_half_precision_and_file_about_half_size(tmp_path: Path) -> None:
    pooled, stages = _features(n=40, stages=(0, 2))
    f32, f16 = tmp_path / "f32.safetensors", tmp_path / "f16.safetensors"
    save_gallery(f32, pooled, stages, _manifest(n=40, stages=(0, 2)))
    written = save_gallery(f16, pooled, stages, _manifest(n=40, stages=(0, 2)), float16=True)
    gallery = load_gallery(f16)
    assert written.storage_dtype == "float16" and list(gallery.stages) == [0, 2]
    assert gallery.pooled.dtype == torch.float32 and gallery.stages[2].dtype == torch.float32
    torch.testing.assert_close(gallery.pooled, pooled, rtol=FP16_RTOL, atol=FP16_RTOL)
    torch.testing.assert_close(gallery.stages[0], stages[0], rtol=FP16_RTOL, atol=FP16_RTOL)
    assert not torch.equal(gallery.pooled, pooled)
    assert _data_bytes(f16) * 2 == _data_bytes(f32)
    assert 0.45 < f16.stat().st_size / f32.stat().st_size < 0.6


@pytest.mark.parametrize("keep", [lambda n: n - 1, lambda n: n - 300, lambda n: 40, lambda n: 4])
def test_truncated_file_is_refused_as_truncated(tmp_path: Path, keep: Callable[[int], int]) -> None:
    path = tmp_path / "g.safetensors"
    _stored(path)
    data = path.read_bytes()
    path.write_bytes(data[: keep(len(data))])
    assert "truncated" in _refused(path)


def test_trailing_bytes_after_the_data_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "g.safetensors"
    _stored(path)
    path.write_bytes(path.read_bytes() + b"\0" * 16)
    assert "does not match header" in _refused(path)


def test_flipped_byte_in_tensor_data_is_refused_as_content_hash_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "g.safetensors"
    _stored(path)
    data = bytearray(path.read_bytes())
    data[-10] ^= 0x01
    path.write_bytes(bytes(data))
    assert _refused(path) == "content hash mismatch (file is corrupt or was modified)"


def test_crafted_file_with_correct_hash_loads(tmp_path: Path) -> None:
    """Control for the crafted-file tests below: the spec hash is what the loader checks."""
    path = tmp_path / "g.safetensors"
    manifest, tensors = _stored(path)
    tensors["pooled"] = tensors["pooled"] + 1.0
    _write_crafted(path, tensors, manifest)
    assert torch.equal(load_gallery(path).pooled, tensors["pooled"])


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_value_with_correct_hash_is_refused_as_nan_or_inf(tmp_path: Path, bad: float) -> None:
    path = tmp_path / "g.safetensors"
    manifest, tensors = _stored(path)
    tensors["stage1"][2, 3, 1, 0] = bad
    _write_crafted(path, tensors, manifest)
    assert _refused(path) == "stage1 contains NaN or Inf"


def _drop_image(m: dict[str, Any], t: dict[str, torch.Tensor]) -> None:
    t["stage2"] = t["stage2"][:-1]


def _wrong_stage_shape(m: dict[str, Any], t: dict[str, torch.Tensor]) -> None:
    m["stage_shapes"]["stage0"] = [4, 4, 16]


def _wrong_image_count(m: dict[str, Any], t: dict[str, torch.Tensor]) -> None:
    m["image_count"] = N_IMAGES + 1
    m["sources"].append({"name": "extra.png", "sha256": "cd" * 32})


def _wrong_source_count(m: dict[str, Any], t: dict[str, torch.Tensor]) -> None:
    m["sources"].pop()


def _missing_tensor(m: dict[str, Any], t: dict[str, torch.Tensor]) -> None:
    del t["stage1"]


def _extra_tensor(m: dict[str, Any], t: dict[str, torch.Tensor]) -> None:
    t["stage9"] = torch.zeros(N_IMAGES, 1, 1, 1)


def _missing_shape_entry(m: dict[str, Any], t: dict[str, torch.Tensor]) -> None:
    del m["stage_shapes"]["pooled"]


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (_drop_image, "wrong shapes: stage2 is [4, 8, 2, 2], manifest says [5, 8, 2, 2]"),
        (_wrong_stage_shape, "wrong shapes: stage0 is [5, 4, 8, 8], manifest says [5, 4, 4, 16]"),
        (_wrong_image_count, "wrong shapes: pooled is [5, 16], manifest says [6, 16]"),
        (_wrong_source_count, "wrong shapes: 4 sources, image_count 5"),
        (_missing_tensor, "wrong tensors: missing ['stage1'], extra []"),
        (_extra_tensor, "wrong tensors: missing [], extra ['stage9']"),
        (_missing_shape_entry, "wrong shapes: stage_shapes has ['stage0', 'stage1', 'stage2']"),
    ],
)
def test_wrong_shapes_with_correct_hash_are_refused(
    tmp_path: Path, mutate: Callable[[dict[str, Any], dict[str, torch.Tensor]], None], reason: str
) -> None:
    path = tmp_path / "g.safetensors"
    manifest, tensors = _stored(path)
    mutate(manifest, tensors)
    _write_crafted(path, tensors, manifest)
    assert _refused(path).startswith(reason)


def test_missing_manifest_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "g.safetensors"
    _write_crafted(path, {"pooled": torch.zeros(2, 3)}, None)
    assert "missing manifest" in _refused(path)


def test_manifest_that_is_not_json_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "g.safetensors"
    _write_crafted(path, {"pooled": torch.zeros(2, 3)}, '{"format_version": 1, backbone')
    assert "manifest is not valid JSON" in _refused(path)


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("backbone", None, "manifest field backbone"),
        ("colour", "rgb", "manifest field colour: Extra inputs are not permitted"),
        ("weights_sha256", "not-a-hash", "manifest field weights_sha256"),
        ("created_at", "2024-05-01T14:00:00+02:00", "manifest field created_at"),
        (
            "preprocessing",
            {**PREPROCESSING.model_dump(), "resize_px": "big"},
            "manifest field preprocessing.resize_px",
        ),
    ],
)
def test_manifest_failing_the_schema_is_refused_naming_the_field(
    tmp_path: Path, field: str, value: Any, named: str
) -> None:
    path = tmp_path / "g.safetensors"
    manifest, tensors = _stored(path)
    if value is None:
        del manifest[field]
    else:
        manifest[field] = value
    _write_crafted(path, tensors, manifest)
    reason = _refused(path)
    assert reason.startswith("manifest is not valid") and named in reason


@pytest.mark.parametrize("version", [GALLERY_FORMAT_VERSION + 1, 0, "1"])
def test_other_format_version_is_refused(tmp_path: Path, version: Any) -> None:
    path = tmp_path / "g.safetensors"
    manifest, tensors = _stored(path)
    manifest["format_version"] = version
    _write_crafted(path, tensors, manifest)
    assert _refused(path).startswith(f"unsupported format version {version!r}")


def test_format_version_1_is_refused_naming_the_command_that_rewrites_it(tmp_path: Path) -> None:
    path = tmp_path / "g.safetensors"
    manifest, tensors = _stored(path)
    _write_crafted(path, tensors, {**manifest, "format_version": 1})
    reason = _refused(path)
    assert reason.startswith("format version 1 has no hash over its manifest")
    assert f"inspector gallery calibrate --gallery {path}" in reason


def test_missing_file_is_refused(tmp_path: Path) -> None:
    assert _refused(tmp_path / "absent.safetensors") == "file not found"


def test_text_file_is_refused_as_not_safetensors(tmp_path: Path) -> None:
    path = tmp_path / "g.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00this is not json")
    assert _refused(path) == "not a safetensors file (header is not JSON)"


def test_backbone_mismatch_says_expected_and_found(tmp_path: Path) -> None:
    path = tmp_path / "g.safetensors"
    _stored(path)
    reason = _refused(path, expect_backbone="resnet18")
    assert reason == "backbone mismatch: expected 'resnet18', found 'efficientnet_lite0'"


def test_weights_hash_mismatch_says_expected_and_found(tmp_path: Path) -> None:
    path = tmp_path / "g.safetensors"
    _stored(path)
    reason = _refused(path, expect_weights_sha256="cd" * 32)
    assert reason == f"weights hash mismatch: expected {'cd' * 32}, found {WEIGHTS_SHA}"


def test_preprocessing_mismatch_names_each_differing_field(tmp_path: Path) -> None:
    path = tmp_path / "g.safetensors"
    _stored(path)
    other = PREPROCESSING.model_copy(update={"crop_px": 200, "keep_aspect": True})
    reason = _refused(path, expect_preprocessing=other)
    assert (
        reason
        == "preprocessing mismatch: crop_px expected 200, found 224; keep_aspect expected True, found False"
    )


class _TouchMarker:
    """Unpickling this runs a shell command that creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def test_pickle_payloads_are_refused_and_never_executed(tmp_path: Path) -> None:
    control_marker, marker = tmp_path / "control_marker", tmp_path / "marker"
    control = pickle.dumps(_TouchMarker(control_marker), protocol=0)
    unpickle = "import pickle, sys; pickle.loads(sys.stdin.buffer.read())"
    subprocess.run([sys.executable, "-c", unpickle], input=control, check=True, timeout=30)
    assert control_marker.exists(), "control: the payload must really create its marker when unpickled"

    text_payload = pickle.dumps(_TouchMarker(marker), protocol=0)
    binary_payload = pickle.dumps(_TouchMarker(marker), protocol=pickle.HIGHEST_PROTOCOL)
    reasons = []
    for name, payload in [("text", text_payload), ("binary", binary_payload)]:
        raw = tmp_path / f"raw_{name}.safetensors"
        raw.write_bytes(payload)
        reasons.append(_refused(raw))
    as_manifest = tmp_path / "manifest_payload.safetensors"
    _write_crafted(as_manifest, {"pooled": torch.zeros(2, 3)}, text_payload.decode("ascii"))
    reasons.append(_refused(as_manifest))
    as_json_string = tmp_path / "json_string_payload.safetensors"
    _write_crafted(
        as_json_string, {"pooled": torch.zeros(2, 3)}, json.dumps(binary_payload.decode("latin-1"))
    )
    reasons.append(_refused(as_json_string))

    assert reasons[0].startswith("not a safetensors file (header length")
    assert reasons[1] == "not a safetensors file (looks like a pickle; galleries are never unpickled)"
    assert reasons[2].startswith("manifest is not valid JSON")
    assert reasons[3] == "manifest is not valid: expected a JSON object"
    assert not marker.exists()


def test_torch_save_archive_is_refused_as_not_safetensors(tmp_path: Path) -> None:
    path = tmp_path / "g.safetensors"
    torch.save({"pooled": torch.zeros(2, 3)}, path)
    assert (
        _refused(path)
        == "not a safetensors file (looks like a zip archive (torch.save); galleries are never unpickled)"
    )


def test_tensor_stored_in_another_dtype_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "g.safetensors"
    manifest, tensors = _stored(path)
    tensors["stage0"] = tensors["stage0"].double()
    _write_crafted(path, tensors, manifest)
    assert _refused(path) == "stage0 is torch.float64, storage_dtype is float32"


def test_saved_file_is_world_readable_and_replacing_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "g.safetensors"
    pooled, stages = _features()
    save_gallery(path, pooled, stages, _manifest())
    assert path.stat().st_mode & 0o777 == 0o644
    path.chmod(0o640)
    save_gallery(path, pooled, stages, _manifest(), float16=True)
    assert path.stat().st_mode & 0o777 == 0o640 and load_gallery(path).manifest.storage_dtype == "float16"


def test_save_refuses_non_finite_values_and_leaves_existing_file_intact(tmp_path: Path) -> None:
    path = tmp_path / "g.safetensors"
    _stored(path)
    before = path.read_bytes()
    pooled, stages = _features(seed=1)
    stages[0][0, 0, 0, 0] = float("nan")
    with pytest.raises(GalleryError, match="stage0 contains NaN or Inf"):
        save_gallery(path, pooled, stages, _manifest())
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["g.safetensors"]


def test_save_refuses_values_beyond_float16_range(tmp_path: Path) -> None:
    pooled, stages = _features()
    pooled[0, 0] = 1e6
    with pytest.raises(GalleryError, match="beyond the float16 range"):
        save_gallery(tmp_path / "g.safetensors", pooled, stages, _manifest(), float16=True)


@pytest.mark.parametrize(
    ("n_tensors", "stages", "reason"),
    [
        (N_IMAGES - 1, (0, 1, 2), "pooled has 4 images, image_count 5"),
        (N_IMAGES, (0, 2), r"stages given \[0, 2\] != manifest stages \[0, 1, 2\]"),
    ],
)
def test_save_refuses_tensors_that_disagree_with_the_manifest(
    tmp_path: Path, n_tensors: int, stages: tuple[int, ...], reason: str
) -> None:
    pooled, feats = _features(n=n_tensors, stages=stages)
    with pytest.raises(GalleryError, match=reason):
        save_gallery(tmp_path / "g.safetensors", pooled, feats, _manifest())
    assert not (tmp_path / "g.safetensors").exists()


def _calibration() -> Calibration:
    """A consistent calibration: each threshold the 1% rate value (the maximum) of its recorded scores."""
    return Calibration(
        image_threshold=1.25,
        target_false_reject_rate=0.01,
        pixel_threshold=0.75,
        pixel_target_rate=0.01,
        method="leave_one_out",
        n_images=N_IMAGES,
        score_median=0.5,
        map_max_median=0.6,
        image_score_median=1.0,
        normal_scores=[1.25, 1.0, 0.5, 1.0, 1.0],
        normal_knn=[0.5, 0.25, 0.5, 0.75, 0.5],
        normal_map_max=[0.6, 0.6, 0.75, 0.5, 0.6],
        created_at="2024-05-02T08:30:00.250000Z",
    )


@pytest.mark.parametrize("float16", [False, True])
def test_update_calibration_keeps_tensors_and_content_hash(tmp_path: Path, float16: bool) -> None:
    path = tmp_path / "g.safetensors"
    pooled, stages = _features()
    written = save_gallery(path, pooled, stages, _manifest(), float16=float16)
    before = load_gallery(path)
    updated = update_calibration(path, _calibration())
    after = load_gallery(path)
    assert written.calibration is None and after.manifest.calibration == _calibration()
    assert updated == after.manifest and after.manifest.content_sha256 == written.content_sha256
    assert after.sha256 != before.sha256  # the calibration is part of the gallery hash
    assert after.manifest.storage_dtype == written.storage_dtype
    assert torch.equal(after.pooled, before.pooled) and torch.equal(after.stages[2], before.stages[2])
    assert [p.name for p in tmp_path.iterdir()] == ["g.safetensors"]


def test_update_calibration_refuses_a_corrupt_gallery(tmp_path: Path) -> None:
    path = tmp_path / "g.safetensors"
    _stored(path)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(GalleryError, match="content hash mismatch"):
        update_calibration(path, _calibration())
    assert bytes(path.read_bytes()) == bytes(data)


def test_file_sha256_matches_hashlib_across_chunks(tmp_path: Path) -> None:
    path = tmp_path / "weights.bin"
    data = os.urandom(10_000)
    path.write_bytes(data)
    assert file_sha256(path, chunk_bytes=999) == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(
    ("stamp", "valid"),
    [
        ("2024-05-01T12:00:00Z", True),
        ("2024-05-01T12:00:00.123456Z", True),
        ("2024-05-01T12:00:00+00:00", True),
        ("2024-05-01T14:00:00+02:00", False),
        ("2024-05-01T12:00:00", False),
        ("2024-13-01T00:00:00Z", False),
        ("yesterday", False),
    ],
)
def test_created_at_must_be_rfc3339_utc(stamp: str, valid: bool) -> None:
    data = {**_manifest().model_dump(), "created_at": stamp}
    if valid:
        assert GalleryManifest.model_validate(data).created_at == stamp
    else:
        with pytest.raises(ValidationError, match="created_at"):
            GalleryManifest.model_validate(data)


def test_read_manifest_validates_the_header_without_reading_the_tensors(tmp_path: Path) -> None:
    path = tmp_path / "g.safetensors"
    manifest, _ = _stored(path)
    data = bytearray(path.read_bytes())
    data[-10] ^= 0x01  # tensor bytes: only a full load (which hashes them) notices
    path.write_bytes(bytes(data))
    assert read_manifest(path).content_sha256 == manifest["content_sha256"]
    assert _refused(path) == "content hash mismatch (file is corrupt or was modified)"
    path.write_bytes(b"not a gallery")
    with pytest.raises(GalleryError, match=str(path)):
        read_manifest(path)
