"""Gallery file format: SPADE features of known-good images in one validated safetensors file (no pickle)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import ValidationError
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as safetensors_load
from safetensors.torch import save_file

from inspector.core.errors import validation_lines
from inspector.model.digest import canonical_json, gallery_sha256
from inspector.model.header import GalleryError, read_header
from inspector.model.manifest import (
    GALLERY_FORMAT_VERSION,
    LEGACY_FORMAT_VERSION,
    Calibration,
    GalleryManifest,
    Preprocessing,
)

MANIFEST_KEY = "inspector_manifest"
HASH_KEY = "inspector_gallery_sha256"
POOLED_NAME = "pooled"
FLOAT16_MAX = 65504.0
NEW_FILE_MODE = 0o644
STORAGE_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16}


def stage_name(stage: int) -> str:
    """Tensor name of a pyramid stage, e.g. ``stage0``."""
    return f"stage{stage}"


@dataclass(frozen=True)
class Gallery:
    """A loaded, validated gallery: float32 CPU tensors; ``stages`` maps stage index -> [N, C, H, W].

    ``sha256`` is the gallery hash the file was loaded with (empty for a gallery assembled in memory).
    """

    manifest: GalleryManifest
    pooled: torch.Tensor
    stages: dict[int, torch.Tensor]
    sha256: str = ""

    @property
    def content_hash(self) -> str:
        """The gallery hash (tensors and the whole manifest, see :func:`manifest_hash`): the verdicts' one."""
        return self.sha256 or manifest_hash(self.manifest)


def content_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """Hash the tensors exactly as stored.

    For each name in sorted order the digest is updated with: the name (UTF-8), a NUL byte, the dtype string
    (``float32``/``float16``), a NUL byte, the shape as comma-separated decimals (e.g. ``5,8``), a NUL byte,
    then the raw little-endian C-order bytes of the tensor.
    """
    digest = hashlib.sha256()
    for name in sorted(tensors):
        _hash_tensor(digest, name, tensors[name])
    return digest.hexdigest()


def _hash_tensor(digest: Any, name: str, tensor: torch.Tensor) -> None:
    """Add one tensor to a content hash (see :func:`content_sha256`)."""
    tensor = tensor.detach().cpu().contiguous()
    digest.update(name.encode("utf-8") + b"\0")
    digest.update(str(tensor.dtype).removeprefix("torch.").encode("ascii") + b"\0")
    digest.update(",".join(str(d) for d in tensor.shape).encode("ascii") + b"\0")
    array = tensor.numpy().reshape(-1)
    digest.update(np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).view(np.uint8).data)


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


def manifest_hash(manifest: GalleryManifest) -> str:
    """The gallery hash of a manifest (see :func:`inspector.model.digest.gallery_sha256`)."""
    return gallery_sha256(manifest.model_dump(mode="json"))


def _write_atomic(path: Path, tensors: dict[str, torch.Tensor], manifest: GalleryManifest) -> None:
    """Write to a temporary file in the same directory, fsync, validate it, then os.replace over ``path``.

    The manifest is stored as canonical JSON beside its gallery hash. The temporary file is read back and
    validated in full (:func:`_load_stored`) before the rename, so ``path`` only ever holds a gallery that
    loads; on any error or interruption the temporary file is removed and ``path`` is left as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else NEW_FILE_MODE
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        text = canonical_json(manifest.model_dump(mode="json")).decode("utf-8")
        save_file(tensors, tmp_name, metadata={MANIFEST_KEY: text, HASH_KEY: manifest_hash(manifest)})
        os.chmod(tmp_name, mode)
        with open(tmp_name, "rb+") as handle:
            os.fsync(handle.fileno())
        _verify_written(Path(tmp_name))  # what is renamed into place has been read back and validated
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable."""
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@contextmanager
def staged_replace(path: Path, purpose: str, copy_existing: bool = False) -> Iterator[Path]:
    """A staging file beside ``path`` for a multi-step gallery change; it replaces ``path`` only on success.

    The block writes (and may rewrite) the staging file; when it ends without an exception the staging file
    takes the existing file's permissions and is renamed over ``path``. On any error or interruption
    (Ctrl-C included) the staging file is removed and ``path`` is left byte for byte as it was.

    Args:
        path: the gallery file to create or replace.
        purpose: a word in the staging file's name (``building``, ``calibrating``, ...).
        copy_existing: start the staging file as a copy of ``path`` (for changes made in place).
    """
    path = Path(path)
    staging = path.with_name(f".{path.name}.{purpose}-{os.getpid()}")
    try:
        if copy_existing:
            shutil.copyfile(path, staging)
        yield staging
        if path.exists():
            os.chmod(staging, path.stat().st_mode & 0o777)
        os.replace(staging, path)
        fsync_dir(path.parent)
    finally:
        staging.unlink(missing_ok=True)


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


def _manifest_document(path: Path, header: dict[str, Any]) -> dict[str, Any]:
    """The manifest JSON object of a header (any format version)."""
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
    return raw


def _validated(path: Path, raw: dict[str, Any]) -> GalleryManifest:
    try:
        return GalleryManifest.model_validate(raw)
    except ValidationError as err:
        raise GalleryError(
            path, "manifest is not valid: " + "; ".join(validation_lines(err, "manifest field "))
        ) from None


def _parse_manifest(path: Path, header: dict[str, Any]) -> tuple[GalleryManifest, str]:
    """The validated manifest and its gallery hash, checked against the hash stored beside it."""
    raw = _manifest_document(path, header)
    version = raw.get("format_version")
    if version == LEGACY_FORMAT_VERSION:
        raise GalleryError(
            path,
            f"format version {LEGACY_FORMAT_VERSION} has no hash over its manifest (its calibration could be "
            f"edited unseen); rewrite it as version {GALLERY_FORMAT_VERSION} with "
            f"`inspector gallery calibrate --gallery {path}`",
        )
    if version != GALLERY_FORMAT_VERSION:
        raise GalleryError(
            path, f"unsupported format version {version!r} (expected {GALLERY_FORMAT_VERSION})"
        )
    manifest = _validated(path, raw)
    metadata = header["__metadata__"]
    stored, actual = metadata.get(HASH_KEY), manifest_hash(manifest)
    if not isinstance(stored, str):
        raise GalleryError(path, f"missing gallery hash (no __metadata__ key {HASH_KEY!r})")
    if stored != actual:
        raise GalleryError(
            path,
            f"gallery hash mismatch: the manifest was modified (stored {stored[:12]}, manifest hashes to "
            f"{actual[:12]}); a gallery is only changed by `inspector gallery calibrate` or `add`",
        )
    if manifest.calibration is not None and (problems := manifest.calibration.inconsistencies()):
        raise GalleryError(path, "inconsistent calibration: " + "; ".join(problems))
    if manifest.calibration is not None and (problems := manifest.calibration.degeneracies()):
        raise GalleryError(
            path,
            "degenerate calibration (it would fail good parts): "
            + "; ".join(problems)
            + f"; re-calibrate with `inspector gallery calibrate --gallery {path}` on images it has not seen",
        )
    return manifest, actual


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
    _check_names(path, manifest, tensors)
    want_dtype = STORAGE_DTYPES[manifest.storage_dtype]
    for name, tensor in tensors.items():
        if tensor.dtype != want_dtype:
            raise GalleryError(path, f"{name} is {tensor.dtype}, storage_dtype is {manifest.storage_dtype}")
    if content_sha256(tensors) != manifest.content_sha256:
        raise GalleryError(path, "content hash mismatch (file is corrupt or was modified)")
    for name in sorted(tensors):
        if not bool(torch.isfinite(tensors[name]).all()):
            raise GalleryError(path, f"{name} contains NaN or Inf")
    _check_shapes(path, manifest, {name: list(t.shape) for name, t in tensors.items()})


def _verify_written(path: Path) -> None:
    """Validate a file just written, as :func:`_load_stored` does, one tensor in memory at a time (a build's
    peak memory then holds the gallery once, not twice)."""
    manifest, _ = _parse_manifest(path, read_header(path))
    want_dtype = STORAGE_DTYPES[manifest.storage_dtype]
    digest = hashlib.sha256()
    non_finite: str | None = None
    with safe_open(str(path), framework="pt") as handle:
        names = sorted(handle.keys())
        _check_names(path, manifest, names)
        shapes = {name: list(handle.get_slice(name).get_shape()) for name in names}
        for name in names:
            tensor = handle.get_tensor(name)
            if tensor.dtype != want_dtype:
                raise GalleryError(
                    path, f"{name} is {tensor.dtype}, storage_dtype is {manifest.storage_dtype}"
                )
            _hash_tensor(digest, name, tensor)
            if non_finite is None and not bool(torch.isfinite(tensor).all()):
                non_finite = name
            del tensor
    if digest.hexdigest() != manifest.content_sha256:
        raise GalleryError(path, "content hash mismatch (file is corrupt or was modified)")
    if non_finite is not None:
        raise GalleryError(path, f"{non_finite} contains NaN or Inf")
    _check_shapes(path, manifest, shapes)


def _check_names(path: Path, manifest: GalleryManifest, names: Iterable[str]) -> None:
    expected = {POOLED_NAME, *(stage_name(s) for s in manifest.stages)}
    missing, extra = sorted(expected - set(names)), sorted(set(names) - expected)
    if missing or extra:
        raise GalleryError(path, f"wrong tensors: missing {missing}, extra {extra}")


def _check_shapes(path: Path, manifest: GalleryManifest, shapes: dict[str, list[int]]) -> None:
    expected = {POOLED_NAME, *(stage_name(s) for s in manifest.stages)}
    if set(manifest.stage_shapes) != expected:
        raise GalleryError(path, f"wrong shapes: stage_shapes has {sorted(manifest.stage_shapes)}")
    if len(manifest.sources) != manifest.image_count:
        raise GalleryError(
            path, f"wrong shapes: {len(manifest.sources)} sources, image_count {manifest.image_count}"
        )
    for name in sorted(shapes):
        want = [manifest.image_count, *manifest.stage_shapes[name]]
        if shapes[name] != want:
            raise GalleryError(path, f"wrong shapes: {name} is {shapes[name]}, manifest says {want}")


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


def _load_stored(path: Path) -> tuple[GalleryManifest, str, dict[str, torch.Tensor]]:
    """Read and fully validate a gallery: its manifest, gallery hash and tensors in their stored dtype."""
    header = read_header(path)
    manifest, sha256 = _parse_manifest(path, header)
    tensors = _read_tensors(path)
    _check_tensors(path, manifest, tensors)
    return manifest, sha256, tensors


def read_manifest(path: Path) -> GalleryManifest:
    """The validated manifest alone (its hash checked), without reading or hashing the tensors."""
    path = Path(path)
    return _parse_manifest(path, read_header(path))[0]


def read_gallery_hash(path: Path) -> str:
    """The gallery hash of a file whose manifest validates (tensors not read: :func:`load_gallery` checks them)."""
    path = Path(path)
    return _parse_manifest(path, read_header(path))[1]


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
    manifest, sha256, tensors = _load_stored(path)
    check_expected(path, manifest, expect_backbone, expect_weights_sha256, expect_preprocessing)
    as_f32 = {name: t.to(torch.float32).contiguous() for name, t in tensors.items()}
    stages = {s: as_f32[stage_name(s)] for s in sorted(manifest.stages)}
    return Gallery(manifest=manifest, pooled=as_f32[POOLED_NAME], stages=stages, sha256=sha256)


def update_calibration(path: Path, calibration: Calibration) -> GalleryManifest:
    """Store a calibration in a gallery's manifest, atomically; tensors and content hash stay unchanged.

    Raises:
        GalleryError: the existing file does not load cleanly, or the calibration disagrees with its own
            recorded normal scores.
    """
    path = Path(path)
    if problems := calibration.inconsistencies():
        raise GalleryError(path, "inconsistent calibration refused: " + "; ".join(problems))
    manifest, _, tensors = _load_stored(path)
    final = _revalidate(path, manifest, calibration=calibration.model_dump())
    _write_atomic(path, tensors, final)
    return final


def manifest_document(path: Path) -> dict[str, Any]:
    """The manifest's JSON object as stored, any format version, not validated (for progress counts and
    migration; :func:`read_manifest` is the validated reader).

    Raises:
        GalleryError: the file has no readable safetensors header or manifest.
    """
    path = Path(path)
    return _manifest_document(path, read_header(path))


def is_legacy(path: Path) -> bool:
    """True when the file's manifest says format version 1 (see :func:`migrate_legacy`).

    Raises:
        GalleryError: the file has no readable safetensors header or manifest.
    """
    return manifest_document(path).get("format_version") == LEGACY_FORMAT_VERSION


def migrate_legacy(path: Path) -> bool:
    """Rewrite a format-version-1 gallery as the current version, its calibration dropped (to be redone).

    A version 1 calibration records no normal scores, so it cannot be checked and is not carried over. The
    tensors are checked against their content hash first.

    Returns:
        True when the file was rewritten, False when it already had the current version.

    Raises:
        GalleryError: the file is not a gallery that validates as version 1 or the current version.
    """
    path = Path(path)
    header = read_header(path)
    raw = _manifest_document(path, header)
    if raw.get("format_version") != LEGACY_FORMAT_VERSION:
        return False
    manifest = _validated(path, {**raw, "format_version": GALLERY_FORMAT_VERSION, "calibration": None})
    tensors = _read_tensors(path)
    _check_tensors(path, manifest, tensors)
    _write_atomic(path, tensors, manifest)
    return True
