"""SPADE inference engine: backbone + gallery + math, from uint8 images to scores, maps, masks and verdicts."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np
import torch

from inspector.config.model import ModelConfig
from inspector.config.runtime import RuntimeConfig
from inspector.core.errors import InspectorError
from inspector.core.records import CropBox
from inspector.model import kernel, nearest, spade
from inspector.model.backbone import BackboneSpec, FeatureExtractor, build_backbone
from inspector.model.gallery import Gallery, check_expected, load_gallery
from inspector.model.geometry import frame_area_px
from inspector.model.header import GalleryError
from inspector.model.manifest import Calibration
from inspector.model.maps import defect_mask
from inspector.model.openvino_backbone import (
    Extractor,
    OpenVinoExtractor,
    build_or_reason,
    default_cache_dir,
    probe_image,
)
from inspector.model.preprocess import Prepared, prepare_batch
from inspector.model.settings import (
    check_feature_shapes,
    manifest_preprocessing,
    preprocess_spec,
    settings_from_manifest,
)

MIB = 1 << 20
PROBE_IMAGE_PX = 256  # the OpenVINO check's probe image, before preprocessing


class EngineError(InspectorError):
    """The engine cannot score: uncalibrated gallery, mismatched settings, unusable device."""


def resolve_device(name: str) -> torch.device:
    """Map the config's device name to a torch device ("auto" picks CUDA when present)."""
    if name == "cuda" and not torch.cuda.is_available():
        raise EngineError("runtime.device: cuda requested but no CUDA device is available")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def wants_openvino(setting: str, device: torch.device) -> bool:
    """Whether ``runtime.backbone_runtime`` asks for OpenVINO on ``device`` ("openvino" on CUDA is refused).

    Raises:
        EngineError: openvino asked for on a CUDA device.
    """
    if setting == "openvino" and device.type != "cpu":
        raise EngineError(f"runtime.backbone_runtime: openvino runs on CPU only, the device is {device}")
    return setting == "openvino" or (setting == "auto" and device.type == "cpu")


@dataclass
class Features:
    """Backbone output for a batch: pooled [B, D] and stage maps {stage: [B, C, H, W]} (CPU or device)."""

    pooled: torch.Tensor
    stages: dict[int, torch.Tensor]


@dataclass
class RawScores:
    """Every image-score variant and the anomaly maps for a batch (numpy, CPU)."""

    knn: np.ndarray
    map_max: np.ndarray
    map_top_mean: np.ndarray
    maps: np.ndarray
    stage_means: np.ndarray  # [B, stages]: mean nearest-feature distance per stage, before fusion
    timings_ms: dict[str, float] = field(default_factory=dict)
    neighbours: np.ndarray | None = (
        None  # [B, K] gallery indices the maps were matched against, nearest first
    )


@dataclass(frozen=True)
class ScoreResult:
    """One image's outcome.

    Attributes:
        score: image score in the gallery's calibrated mode.
        threshold: calibrated image threshold.
        verdict: "FAIL" (score above threshold), "REVIEW" (above the review threshold, when the gallery has a
            review band) or "PASS".
        pixel_threshold: calibrated pixel threshold (the mask is the map above it).
        anomaly_map: float32 [crop, crop] map in model-input (crop) coordinates.
        mask: uint8 0/255 [crop, crop], anomaly_map above the pixel threshold.
        defect_area_px: mask pixels set (the crop's pixels, as the bus's mask).
        defect_area_frame_px: the frame pixels those mask pixels cover.
        crop: the BGR crop the network saw.
        timings_ms: the batch's time per stage in milliseconds.
        crop_box: where the crop (and so the map and mask) lies in the scored image.
        neighbours: source names of the K nearest gallery images the map was computed against, nearest first.
    """

    score: float
    threshold: float
    verdict: Literal["PASS", "REVIEW", "FAIL"]
    pixel_threshold: float
    knn_score: float
    map_max: float
    anomaly_map: np.ndarray
    mask: np.ndarray
    defect_area_px: int
    crop: np.ndarray
    timings_ms: dict[str, float]
    crop_box: CropBox | None = None
    neighbours: tuple[str, ...] = ()
    defect_area_frame_px: int = 0
    review_threshold: float | None = None


class BackboneCache:
    """Backbones built so far, one per (name, weights file, device, layout): galleries that use the same network share it.

    Not thread-safe; the daemon builds every engine from one thread.
    """

    def __init__(self, random_weights: bool = False) -> None:
        """Create an empty cache; ``random_weights`` builds untrained networks (benchmarks only)."""
        self._random = random_weights
        self._built: dict[tuple[str, str, str, str], tuple[FeatureExtractor, BackboneSpec]] = {}
        self._openvino: dict[tuple[str, str, tuple[int, ...]], OpenVinoExtractor | str] = {}

    def get(
        self, name: str, runtime: RuntimeConfig, device: torch.device
    ) -> tuple[FeatureExtractor, BackboneSpec]:
        """The backbone ``name`` on ``device``, built (from local files only) the first time it is asked for.

        Raises:
            BackboneError: the weights file is missing or wrong.
        """
        weights = runtime.weights_for(name)
        layout = torch.channels_last if runtime.channels_last else torch.contiguous_format
        key = (name, str(weights or ""), str(device), str(layout))
        if key not in self._built:
            extractor, spec = build_backbone(name, weights, random_weights=self._random)
            self._built[key] = (extractor.to(device).to(memory_format=layout), spec)
        return self._built[key]

    def openvino(
        self,
        name: str,
        runtime: RuntimeConfig,
        module: FeatureExtractor,
        spec: BackboneSpec,
        probe: torch.Tensor,
    ) -> tuple[OpenVinoExtractor | None, str]:
        """The OpenVINO conversion of the CPU extractor ``module`` for inputs shaped like ``probe``, built once.

        Returns:
            The extractor, or None and the reason it was refused (the caller runs torch; the daemon logs it).
        """
        key = (name, str(runtime.weights_for(name) or ""), tuple(probe.shape))
        if key not in self._openvino:
            cache_dir = None if self._random else (runtime.openvino_cache_dir or default_cache_dir())
            weights = (name, spec.weights_sha256)
            self._openvino[key] = build_or_reason(module, probe, weights, cache_dir, torch.get_num_threads())
        found = self._openvino[key]
        return (None, found) if isinstance(found, str) else (found, "")

    def __len__(self) -> int:
        """Backbones built."""
        return len(self._built)


class FeatureEngine:
    """Preprocessing plus the frozen backbone: images in, SPADE features out."""

    def __init__(
        self,
        config: ModelConfig,
        runtime: RuntimeConfig,
        backbones: BackboneCache | None = None,
    ) -> None:
        """Build (or take from ``backbones``) the backbone the settings name, on the runtime's device.

        ``extractor`` is what runs the backbone (``backbone_runtime``: torch, or openvino with
        ``backbone_note`` empty; a refused OpenVINO conversion leaves its reason there), ``torch_extractor``
        the torch module; ``fused`` the fused pixel kernel, or None with ``kernel_note`` saying why.

        Raises:
            BackboneError: the weights file is missing or wrong.
            EngineError: the device is unusable.
        """
        self.config = config
        self.runtime = runtime
        self.device = resolve_device(runtime.device)
        cache = backbones if backbones is not None else BackboneCache()
        self.torch_extractor, self.spec = cache.get(config.backbone, runtime, self.device)
        self.prep = preprocess_spec(config, self.spec)
        self.extractor: Extractor = self.torch_extractor
        self.backbone_runtime, self.backbone_note = "torch", ""
        if wants_openvino(runtime.backbone_runtime, self.device):
            probe = prepare_batch([probe_image(PROBE_IMAGE_PX, PROBE_IMAGE_PX)], self.prep).tensor
            converted, self.backbone_note = cache.openvino(
                config.backbone, runtime, self.torch_extractor, self.spec, probe
            )
            if converted is not None:  # else refused (the reason in backbone_note): torch runs the backbone
                self.extractor, self.backbone_runtime = converted, "openvino"
        try:
            self.fused, self.kernel_note = kernel.select_fused(runtime.pixel_kernel, self.device)
        except nearest.NearestError as exc:
            raise EngineError(str(exc)) from None

    @property
    def runtime_summary(self) -> dict[str, str | float | bool]:
        """What runs the backbone and the pixel search; ``fallback`` when "auto" could not take a fast path.

        For the start-up log: the reason a path was refused, the OpenVINO conversion's time and check.
        """
        cpu_auto = self.device.type == "cpu"
        out: dict[str, str | float | bool] = {
            "backbone_runtime": self.backbone_runtime,
            "pixel_kernel": f"fused ({self.fused.best_isa})" if self.fused is not None else "torch",
            "fallback": bool(self.backbone_note)
            or (self.fused is None and self.runtime.pixel_kernel == "auto" and cpu_auto),
        }
        if self.backbone_note:
            out["backbone_note"] = self.backbone_note
        if self.fused is None:
            out["kernel_note"] = self.kernel_note
        if isinstance(self.extractor, OpenVinoExtractor):
            c = self.extractor.conversion
            out |= {"openvino_s": round(c.seconds, 3), "openvino_cached": c.cached}
            out |= {"probe_rel_diff": float(f"{c.probe_rel_diff:.3g}"), "openvino_threads": c.threads}
        return out

    @contextmanager
    def timed(self, timings: dict[str, float], name: str) -> Iterator[None]:
        """Add the wall time of the block, in ms, to timings[name] (synchronising CUDA for honest numbers)."""
        start = time.perf_counter()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        timings[name] = timings.get(name, 0.0) + (time.perf_counter() - start) * 1e3

    @torch.inference_mode()
    def extract(self, images: list[np.ndarray], timings: dict[str, float]) -> tuple[Features, Prepared]:
        """Preprocess and run the backbone on a batch of uint8 images; features stay on the device."""
        with self.timed(timings, "preprocess"):
            prepared = prepare_batch(images, self.prep)
            host = prepared.tensor.pin_memory() if self.device.type == "cuda" else prepared.tensor
            x = host.to(self.device, non_blocking=True)  # from pinned memory the copy is asynchronous
            if self.runtime.channels_last and self.backbone_runtime == "torch":
                x = x.contiguous(memory_format=torch.channels_last)
        with self.timed(timings, "backbone"):
            pooled, pyramid = self.extractor(x)
            stages = {  # contiguous [B, C, H, W] whatever the backbone's layout: the gallery stores it so
                s: spade.neighbourhood_average(pyramid[s].float(), self.config.neighbourhood_px).contiguous()
                for s in self.config.stages
            }
        return Features(pooled.float(), stages), prepared


class Inspector:
    """A feature engine bound to a loaded gallery: scores images and gives verdicts."""

    def __init__(
        self,
        engine: FeatureEngine,
        gallery: Gallery,
        require_calibration: bool = True,
        keep_stage_features: bool = True,
    ) -> None:
        """Bind an engine to a gallery already checked against it (use :meth:`from_gallery`).

        Args:
            engine: the feature engine the gallery was built with.
            gallery: the loaded gallery.
            require_calibration: refuse an uncalibrated gallery.
            keep_stage_features: keep the gallery's [N, C, H, W] stage tensors beside the search banks
                (leave-one-out calibration and ``gallery add`` read them); False frees them once the banks
                are built, so a scorer in service holds the gallery once (``gallery.stages`` is then empty).

        Raises:
            EngineError: ``require_calibration`` and the gallery is not calibrated.
        """
        self.engine = engine
        self.gallery = gallery
        self.config = engine.config
        self.signed_by: str | None = (
            None  # fingerprint of the key whose signature the daemon's loader checked
        )
        cal = gallery.manifest.calibration
        if require_calibration and cal is None:
            raise EngineError(
                f"gallery {gallery.content_hash[:12]}: not calibrated (run inspector gallery calibrate)"
            )
        dev = engine.device
        self.pooled = gallery.pooled.to(dev)
        self.pooled_sq = (self.pooled * self.pooled).sum(1)
        storage = torch.float16 if gallery.manifest.storage_dtype == "float16" else torch.float32
        self.banks = {
            s: kernel.StageBank.from_features(t.to(dev), storage) for s, t in gallery.stages.items()
        }
        if not keep_stage_features:
            self.gallery = dataclasses.replace(gallery, stages={})
        self.chunk_bytes = engine.runtime.distance_chunk_mb * MIB
        self.searches = {s: self._search(s) for s in self.config.stages}

    def _search(self, stage: int) -> kernel.Search:
        """The pixel search of one stage: the config's mode, the window scaled to the stage, the block size."""
        cpu = self.engine.device.type == "cpu"
        block = min(kernel.CPU_BLOCK_BYTES, self.chunk_bytes) if cpu else self.chunk_bytes
        radius = kernel.stage_radius(self.config.window_cells, stage)
        precision = self.engine.runtime.precision
        return kernel.Search(
            self.config.pixel_search, radius, block, self.chunk_bytes, precision, self.engine.fused
        )

    @property
    def runtime_summary(self) -> dict[str, str | float | bool]:
        """The engine's :attr:`FeatureEngine.runtime_summary`."""
        return self.engine.runtime_summary

    @property
    def feature_bytes(self) -> int:
        """Bytes of gallery features this scorer holds: pooled features, search banks, kept stage tensors."""
        tensors = [self.pooled, self.pooled_sq, *self.gallery.stages.values()]
        return sum(t.numel() * t.element_size() for t in tensors) + sum(b.nbytes for b in self.banks.values())

    def stage_map(self, stage: int, test: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
        """[B, H, W] nearest-feature distances of one stage's [B, C, H, W] test features (kernel.stage_maps)."""
        return kernel.stage_maps(test, self.banks[stage], neighbours, self.searches[stage])

    @classmethod
    def from_gallery(
        cls,
        path: Path,
        runtime: RuntimeConfig,
        require_calibration: bool = True,
        backbones: BackboneCache | None = None,
        keep_stage_features: bool = True,
    ) -> Inspector:
        """The one way a gallery file becomes a scorer: load it, build its backbone, check that they agree.

        The file is read and hashed once; the model settings come from its manifest, the device, arithmetic
        and weights files from ``runtime``.

        Args:
            path: the gallery file.
            runtime: run-time settings of this machine.
            require_calibration: refuse an uncalibrated gallery (False only while calibrating it).
            backbones: shared backbones (galleries using the same network then share one copy).
            keep_stage_features: see :class:`Inspector` (the daemon passes False).

        Raises:
            GalleryError: the file is corrupt or does not match the backbone (names the file and reason).
            BackboneError: the weights file is missing or wrong.
            EngineError: the gallery is not calibrated, or the device is unusable.
        """
        gallery = load_gallery(path)
        if require_calibration and gallery.manifest.calibration is None:
            raise EngineError(
                f"gallery {path}: not calibrated (run inspector gallery calibrate --gallery {path})"
            )
        try:
            config = settings_from_manifest(gallery.manifest)
        except ValueError as exc:
            raise GalleryError(path, f"manifest settings this build cannot use: {exc}") from None
        engine = FeatureEngine(config, runtime, backbones)
        check_expected(
            path,
            gallery.manifest,
            engine.spec.name,
            engine.spec.weights_sha256,
            manifest_preprocessing(config, engine.spec),
        )
        check_feature_shapes(path, gallery.manifest, engine.spec, config)
        return cls(engine, gallery, require_calibration, keep_stage_features)

    @property
    def threshold(self) -> float:
        """The calibrated image threshold."""
        cal = self.gallery.manifest.calibration
        if cal is None:
            raise EngineError("gallery is not calibrated")
        return cal.image_threshold

    @torch.inference_mode()
    def stage_scales(self) -> list[float] | None:
        """Per-stage divisors for the configured fusion (None for the paper's plain mean)."""
        if self.config.stage_fusion == "mean":
            return None
        cal = self.gallery.manifest.calibration
        if cal is None or cal.stage_scales is None:
            raise EngineError(f"stage_fusion {self.config.stage_fusion} needs calibrated stage scales")
        return cal.stage_scales

    def raw_scores(
        self,
        feats: Features,
        valid: list[tuple[int, int, int, int]],
        exclude: torch.Tensor | None = None,
        scales: list[float] | None = None,
    ) -> RawScores:
        """All score variants and fused maps for features already on the device.

        ``scales`` overrides the calibrated stage scales (used while calibrating them).
        """
        t: dict[str, float] = {}
        cfg, eng, run = self.config, self.engine, self.engine.runtime
        with eng.timed(t, "image_knn"):
            knn, nn_idx = spade.knn_scores(
                feats.pooled, self.pooled, cfg.image_k, cfg.pixel_k, exclude, run.precision, self.pooled_sq
            )
        with eng.timed(t, "pixel_match"):
            per_stage = [self.stage_map(s, feats.stages[s], nn_idx) for s in cfg.stages]
        with eng.timed(t, "upsample_blur"):
            fusion = cfg.stage_fusion
            if fusion != "mean" and scales is None:
                scales = self.stage_scales()
            maps = spade.fuse_maps(
                per_stage,
                (cfg.crop_px, cfg.crop_px),
                cfg.blur_sigma_px,
                scales if fusion != "mean" else None,
                geometric=fusion == "scaled_geomean",
            )
            maps = _zero_outside(maps, valid)
            mmax, mtop = spade.map_image_scores(maps)
        stage_means = torch.stack([m.flatten(1).mean(1) for m in per_stage], 1)
        return RawScores(
            knn.cpu().numpy(),
            mmax.cpu().numpy(),
            mtop.cpu().numpy(),
            maps.cpu().numpy(),
            stage_means.cpu().numpy(),
            t,
            nn_idx.cpu().numpy(),
        )

    def combine(self, raw: RawScores, calibration: Calibration | None = None) -> np.ndarray:
        """Image scores in the gallery's mode (knn_plus_map needs calibration medians: given, else the gallery's)."""
        mode = self.config.image_score
        if mode == "knn_pooled":
            return raw.knn
        if mode == "map_max":
            return raw.map_max
        if mode == "map_top_mean":
            return raw.map_top_mean
        cal = calibration or self.gallery.manifest.calibration
        if cal is None:
            raise EngineError("image_score knn_plus_map needs calibration medians")
        return np.asarray(raw.knn / cal.score_median + raw.map_max / cal.map_max_median)

    def score(self, images: list[np.ndarray]) -> list[ScoreResult]:
        """Score a batch of uint8 images (gray or BGR, any size) against the gallery."""
        timings: dict[str, float] = {}
        feats, prepared = self.engine.extract(images, timings)
        raw = self.raw_scores(feats, prepared.valid)
        timings.update(raw.timings_ms)
        scores = self.combine(raw)
        cal = self.gallery.manifest.calibration
        assert cal is not None  # enforced in __init__ for scoring instances
        names = [source.name for source in self.gallery.manifest.sources]
        nearest = raw.neighbours if raw.neighbours is not None else np.zeros((len(images), 0), np.int64)
        results = []
        for i, s in enumerate(scores):
            amap = raw.maps[i]
            mask = defect_mask(amap, cal.pixel_threshold)
            area = int(np.count_nonzero(mask))
            results.append(
                ScoreResult(
                    score=float(s),
                    threshold=cal.image_threshold,
                    pixel_threshold=cal.pixel_threshold,
                    verdict=cal.verdict_of(float(s)),
                    review_threshold=cal.review_threshold,
                    knn_score=float(raw.knn[i]),
                    map_max=float(raw.map_max[i]),
                    anomaly_map=amap,
                    mask=mask,
                    defect_area_px=area,
                    crop=prepared.crops[i],
                    timings_ms=dict(timings),
                    crop_box=prepared.boxes[i],
                    neighbours=tuple(names[j] for j in nearest[i]),
                    defect_area_frame_px=frame_area_px(area, prepared.boxes[i]),
                )
            )
        return results


def calibrated_score_median(calibration: Calibration | None, image_score: str) -> float | None:
    """Median image score of a calibration's normal images (None when the gallery does not say).

    Galleries calibrated before ``image_score_median`` was recorded still give it for the modes whose score
    is one of the stored medians (knn_pooled, map_max).
    """
    if calibration is None:
        return None
    if calibration.image_score_median is not None:
        return calibration.image_score_median
    stored = {"knn_pooled": calibration.score_median, "map_max": calibration.map_max_median}
    return stored.get(image_score)


def _zero_outside(maps: torch.Tensor, valid: list[tuple[int, int, int, int]]) -> torch.Tensor:
    """Zero map values outside each image's real content (letterbox padding is never a defect)."""
    h, w = maps.shape[1:]
    for i, (y0, y1, x0, x1) in enumerate(valid):
        if (y0, y1, x0, x1) != (0, h, 0, w):
            keep = torch.zeros((h, w), dtype=torch.bool, device=maps.device)
            keep[y0:y1, x0:x1] = True
            maps[i] = torch.where(keep, maps[i], torch.zeros_like(maps[i]))
    return maps


T = TypeVar("T")


def iter_batches(items: Sequence[T], size: int) -> Iterator[list[T]]:
    """Consecutive slices of at most size items."""
    for start in range(0, len(items), size):
        yield list(items[start : start + size])
