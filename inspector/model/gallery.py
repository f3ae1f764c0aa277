"""Gallery file format: SPADE features of known-good images in one validated safetensors file (no pickle)."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load as safetensors_load
from safetensors.torch import save_file

from inspector.core.errors import InspectorError, validation_lines
from inspector.model.manifest import GALLERY_FORMAT_VERSION, Calibration, GalleryManifest, Preprocessing

MANIFEST_KEY = "inspector_manifest"
POOLED_NAME = "pooled"
HEADER_LEN_BYTES = 8
MAX_HEADER_BYTES = 100 * 1024 * 1024
FLOAT16_MAX = 65504.0
NEW_FILE_MODE = 0o644
PICKLE_PROTO_OPCODE = b"\x80"
PICKLE_PROTOCOLS = (b"\x02", b"\x03", b"\x04", b"\x05")
ZIP_MAGIC = b"PK\x03\x04"
STORAGE_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16}


def stage_name(stage: int) -> str:
    """Tensor name of a pyramid stage, e.g. ``stage0``."""
    return f"stage{stage}"


class GalleryError(InspectorError):
    """A gallery file that cannot be saved or loaded; the message names the file and the reason."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"gallery {path}: {reason}")


@dataclass(frozen=True)
class Gallery:
    """A loaded, validated gallery: float32 CPU tensors; ``stages`` maps stage index -> [N, C, H, W]."""

    manifest: GalleryManifest
    pooled: torch.Tensor
    stages: dict[int, torch.Tensor]

    @property
    def content_hash(self) -> str:
        """SHA-256 over the stored tensors (see :func:`content_sha256`)."""
        return self.manifest.content_sha256


def content_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """Hash the tensors exactly as stored.

    For each name in sorted order the digest is updated with: the name (UTF-8), a NUL byte, the dtype string
    (``float32``/``float16``), a NUL byte, the shape as comma-separated decimals (e.g. ``5,8``), a NUL byte,
    then the raw little-endian C-order bytes of the tensor.
    """
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(name.encode("utf-8") + b"\0")
        digest.update(str(tensor.dtype).removeprefix("torch.").encode("ascii") + b"\0")
        digest.update(",".join(str(d) for d in tensor.shape).encode("ascii") + b"\0")
        array = tensor.numpy().reshape(-1)
        digest.update(np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).view(np.uint8).data)
    return digest.hexdigest()


def _stored_tensors(
    path: Path,
    pooled: torch.Tensor,
    stages: dict[int, torch.Tensor],
    manifest: GalleryManifest,
    dtype: torch.dtype,
) -> dict[str, torch.Tensor]:
    """Validate shapes and values of the tensors to save and convert them to the storage dtype."""
    if set(stages) != set(manifest.stages):
        raise GalleryError(path, f"stages given {sorted(stages)} != manifest stages {manifest.stages}")
    named = {POOLED_NAME: pooled, **{stage_name(s): t for s, t in stages.items()}}
    out: dict[str, torch.Tensor] = {}
    for name, tensor in named.items():
        want_dims = 2 if name == POOLED_NAME else 4
        if tensor.dim() != want_dims:
            raise GalleryError(path, f"{name} must be {want_dims}-D, got shape {list(tensor.shape)}")
        if not tensor.is_floating_point() or tensor.numel() == 0:
            raise GalleryError(path, f"{name} must be a non-empty floating-point tensor, got {tensor.dtype}")
        if tensor.shape[0] != manifest.image_count:
            raise GalleryError(
                path, f"{name} has {tensor.shape[0]} images, image_count {manifest.image_count}"
            )
        if not bool(torch.isfinite(tensor).all()):
            raise GalleryError(path, f"{name} contains NaN or Inf")
        if dtype == torch.float16 and float(tensor.abs().max()) > FLOAT16_MAX:
            raise GalleryError(path, f"{name} has values beyond the float16 range; save as float32")
        out[name] = tensor.detach().to(device="cpu", dtype=dtype).contiguous()
    if len(manifest.sources) != manifest.image_count:
        raise GalleryError(path, f"{len(manifest.sources)} sources, image_count {manifest.image_count}")
    return out


def _write_atomic(path: Path, tensors: dict[str, torch.Tensor], manifest: GalleryManifest) -> None:
    """Write to a temporary file in the same directory, fsync, then os.replace over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else NEW_FILE_MODE
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp_name, metadata={MANIFEST_KEY: manifest.model_dump_json()})
        os.chmod(tmp_name, mode)
        with open(tmp_name, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def save_gallery(
    path: Path,
    pooled: torch.Tensor,
    stages: dict[int, torch.Tensor],
    manifest: GalleryManifest,
    float16: bool = False,
) -> GalleryManifest:
    """Save a gallery atomically.

    Args:
        path: destination ``.safetensors`` file (replaced atomically if it exists).
        pooled: [N, D] pooled features.
        stages: stage index -> [N, C, H, W] feature maps, exactly the manifest's ``stages``.
        manifest: the manifest; ``storage_dtype``, ``stage_shapes`` and ``content_sha256`` are overwritten.
        float16: store as float16 (half the size) instead of float32.

    Returns:
        The manifest as written.

    Raises:
        GalleryError: tensors and manifest disagree (stages, image count, sources), or values are not finite.
    """
    path = Path(path)
    dtype_name: Literal["float32", "float16"] = "float16" if float16 else "float32"
    tensors = _stored_tensors(path, pooled, stages, manifest, STORAGE_DTYPES[dtype_name])
    shapes = {name: list(t.shape[1:]) for name, t in tensors.items()}
    final = _revalidate(
        path, manifest, storage_dtype=dtype_name, stage_shapes=shapes, content_sha256=content_sha256(tensors)
    )
    _write_atomic(path, tensors, final)
    return final


def _revalidate(path: Path, manifest: GalleryManifest, **updates: Any) -> GalleryManifest:
    try:
        return GalleryManifest.model_validate({**manifest.model_dump(), **updates})
    except ValidationError as err:
        raise GalleryError(path, "; ".join(validation_lines(err, "manifest field "))) from None


def _foreign_format(prefix: bytes) -> str | None:
    """Name a format a misplaced file is likely in (pickle protocol >= 2, zip as written by torch.save)."""
    if prefix[:1] == PICKLE_PROTO_OPCODE and prefix[1:2] in PICKLE_PROTOCOLS:
        return "a pickle"
    return "a zip archive (torch.save)" if prefix.startswith(ZIP_MAGIC) else None


def _read_header_bytes(path: Path) -> tuple[int, bytes]:
    """File size and the raw JSON header; refuses missing, unreadable, truncated or implausible files."""
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            prefix = handle.read(HEADER_LEN_BYTES)
            header_len = struct.unpack("<Q", prefix)[0] if len(prefix) == HEADER_LEN_BYTES else -1
            raw = handle.read(header_len) if 0 <= header_len <= MAX_HEADER_BYTES else b""
    except FileNotFoundError:
        raise GalleryError(path, "file not found") from None
    except OSError as err:
        raise GalleryError(path, f"cannot read file ({err.strerror})") from None
    if header_len < 0:
        raise GalleryError(path, f"truncated file ({size} bytes, shorter than the safetensors prefix)")
    if (header_len > MAX_HEADER_BYTES or len(raw) < header_len) and (kind := _foreign_format(prefix)):
        raise GalleryError(path, f"not a safetensors file (looks like {kind}; galleries are never unpickled)")
    if header_len > MAX_HEADER_BYTES:
        raise GalleryError(path, f"not a safetensors file (header length {header_len} is implausible)")
    if len(raw) < header_len:
        raise GalleryError(path, f"truncated file (header needs {header_len} bytes, file has {size})")
    return size, raw


def _read_header(path: Path) -> dict[str, Any]:
    """Parse the safetensors header and check the file size matches it exactly."""
    size, raw = _read_header_bytes(path)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise GalleryError(path, "not a safetensors file (header is not JSON)") from None
    if not isinstance(header, dict):
        raise GalleryError(path, "not a safetensors file (header is not a JSON object)")
    data_end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise GalleryError(path, f"not a safetensors file (tensor {name!r} has no valid data_offsets)")
        data_end = max(data_end, offsets[1])
    expected = HEADER_LEN_BYTES + len(raw) + data_end
    if size < expected:
        raise GalleryError(path, f"truncated file ({size} bytes, header describes {expected})")
    if size > expected:
        raise GalleryError(path, f"file size {size} does not match header ({expected} bytes): trailing data")
    return header


def _parse_manifest(path: Path, header: dict[str, Any]) -> GalleryManifest:
    metadata = header.get("__metadata__")
    text = metadata.get(MANIFEST_KEY) if isinstance(metadata, dict) else None
    if not isinstance(text, str):
        raise GalleryError(path, f"missing manifest (no __metadata__ key {MANIFEST_KEY!r})")
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise GalleryError(path, f"manifest is not valid JSON ({err.msg} at position {err.pos})") from None
    except RecursionError:
        raise GalleryError(path, "manifest is not valid JSON (nested too deeply)") from None
    if not isinstance(raw, dict):
        raise GalleryError(path, "manifest is not valid: expected a JSON object")
    version = raw.get("format_version")
    if version != GALLERY_FORMAT_VERSION:
        raise GalleryError(
            path, f"unsupported format version {version!r} (expected {GALLERY_FORMAT_VERSION})"
        )
    try:
        return GalleryManifest.model_validate(raw)
    except ValidationError as err:
        raise GalleryError(
            path, "manifest is not valid: " + "; ".join(validation_lines(err, "manifest field "))
        ) from None


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors, copied into the process's own memory.

    Never left memory-mapped: a gallery file replaced in place (``cp new.gallery old.gallery`` truncates and
    rewrites it) would otherwise take the pages of the gallery in service away and kill the daemon (SIGBUS).
    """
    try:
        data = path.read_bytes()
    except OSError as err:
        raise GalleryError(path, f"cannot read file ({err.strerror})") from None
    try:
        return safetensors_load(data)
    except (SafetensorError, ValueError, TypeError) as err:
        raise GalleryError(path, f"not a valid safetensors file ({err})") from None


def _check_tensors(path: Path, manifest: GalleryManifest, tensors: dict[str, torch.Tensor]) -> None:
    """Tensor names, dtypes, content hash, finiteness and shapes against the manifest."""
    expected = {POOLED_NAME, *(stage_name(s) for s in manifest.stages)}
    missing, extra = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
    if missing or extra:
        raise GalleryError(path, f"wrong tensors: missing {missing}, extra {extra}")
    want_dtype = STORAGE_DTYPES[manifest.storage_dtype]
    for name, tensor in tensors.items():
        if tensor.dtype != want_dtype:
            raise GalleryError(path, f"{name} is {tensor.dtype}, storage_dtype is {manifest.storage_dtype}")
    if content_sha256(tensors) != manifest.content_sha256:
        raise GalleryError(path, "content hash mismatch (file is corrupt or was modified)")
    for name in sorted(tensors):
        if not bool(torch.isfinite(tensors[name]).all()):
            raise GalleryError(path, f"{name} contains NaN or Inf")
    if set(manifest.stage_shapes) != expected:
        raise GalleryError(path, f"wrong shapes: stage_shapes has {sorted(manifest.stage_shapes)}")
    if len(manifest.sources) != manifest.image_count:
        raise GalleryError(
            path, f"wrong shapes: {len(manifest.sources)} sources, image_count {manifest.image_count}"
        )
    for name in sorted(tensors):
        shape = list(tensors[name].shape)
        want = [manifest.image_count, *manifest.stage_shapes[name]]
        if shape != want:
            raise GalleryError(path, f"wrong shapes: {name} is {shape}, manifest says {want}")


def check_expected(
    path: Path,
    manifest: GalleryManifest,
    backbone: str | None,
    weights_sha256: str | None,
    preprocessing: Preprocessing | None,
) -> None:
    """Refuse (GalleryError naming the file) a manifest whose backbone, weights or preprocessing differ."""
    if backbone is not None and manifest.backbone != backbone:
        raise GalleryError(path, f"backbone mismatch: expected {backbone!r}, found {manifest.backbone!r}")
    if weights_sha256 is not None and manifest.weights_sha256 != weights_sha256.lower():
        raise GalleryError(
            path, f"weights hash mismatch: expected {weights_sha256.lower()}, found {manifest.weights_sha256}"
        )
    if preprocessing is not None and manifest.preprocessing != preprocessing:
        found, want = manifest.preprocessing.model_dump(), preprocessing.model_dump()
        diffs = [f"{k} expected {want[k]!r}, found {found[k]!r}" for k in want if want[k] != found[k]]
        raise GalleryError(path, f"preprocessing mismatch: {'; '.join(diffs)}")


def _load_stored(path: Path) -> tuple[GalleryManifest, dict[str, torch.Tensor]]:
    """Read and fully validate a gallery, returning tensors in their stored dtype."""
    header = _read_header(path)
    manifest = _parse_manifest(path, header)
    tensors = _read_tensors(path)
    _check_tensors(path, manifest, tensors)
    return manifest, tensors


def read_manifest(path: Path) -> GalleryManifest:
    """The validated manifest alone, without reading or hashing the tensors (for counts and settings)."""
    path = Path(path)
    return _parse_manifest(path, _read_header(path))


def load_gallery(
    path: Path,
    expect_backbone: str | None = None,
    expect_weights_sha256: str | None = None,
    expect_preprocessing: Preprocessing | None = None,
) -> Gallery:
    """Load a gallery, validating everything; never unpickles anything.

    Args:
        path: the ``.safetensors`` gallery file.
        expect_backbone: refuse unless the gallery was built with this backbone.
        expect_weights_sha256: refuse unless built with weights of this SHA-256.
        expect_preprocessing: refuse unless built with exactly this preprocessing.

    Returns:
        The gallery, tensors as float32 on CPU.

    Raises:
        GalleryError: missing/truncated/non-safetensors file, missing or invalid manifest, wrong format
            version, content hash mismatch, NaN/Inf, wrong shapes or tensors, or a mismatch with an
            expected value.
    """
    path = Path(path)
    manifest, tensors = _load_stored(path)
    check_expected(path, manifest, expect_backbone, expect_weights_sha256, expect_preprocessing)
    as_f32 = {name: t.to(torch.float32).contiguous() for name, t in tensors.items()}
    stages = {s: as_f32[stage_name(s)] for s in sorted(manifest.stages)}
    return Gallery(manifest=manifest, pooled=as_f32[POOLED_NAME], stages=stages)


def update_calibration(path: Path, calibration: Calibration) -> GalleryManifest:
    """Store a calibration in a gallery's manifest, atomically; tensors and content hash stay unchanged.

    Raises:
        GalleryError: the existing file does not load cleanly.
    """
    path = Path(path)
    manifest, tensors = _load_stored(path)
    final = _revalidate(path, manifest, calibration=calibration.model_dump())
    _write_atomic(path, tensors, final)
    return final
