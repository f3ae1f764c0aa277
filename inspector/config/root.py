"""The root of the configuration tree: every section, environment overrides over the TOML file."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from inspector.config.archive import ArchiveConfig
from inspector.config.batching import BatchingConfig
from inspector.config.bus import BusConfig
from inspector.config.calibration import CalibrationConfig
from inspector.config.camera import CameraConfig
from inspector.config.drift import DriftConfig
from inspector.config.liveview import LiveViewConfig
from inspector.config.logs import LoggingConfig
from inspector.config.metrics import MetricsConfig
from inspector.config.model import ModelConfig
from inspector.config.results import ResultsConfig
from inspector.config.runtime import RuntimeConfig
from inspector.config.worker import WorkerConfig

MAX_CAMERAS = 64
DEFAULT_SHUTDOWN_TIMEOUT_S = 10.0
ENV_PREFIX = "INSPECTOR_"
ENV_NESTED_DELIMITER = "__"


class InspectorConfig(BaseSettings):
    """Root of the configuration tree."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
        extra="forbid",
        validate_assignment=True,
    )

    model: ModelConfig = Field(default_factory=ModelConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)
    cameras: list[CameraConfig] = Field(
        default_factory=list, max_length=MAX_CAMERAS, description="Cameras (names unique)."
    )
    worker: WorkerConfig = Field(default_factory=WorkerConfig)
    batching: BatchingConfig = Field(default_factory=BatchingConfig)
    bus: BusConfig = Field(default_factory=BusConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    archive: ArchiveConfig = Field(default_factory=ArchiveConfig)
    results: ResultsConfig = Field(default_factory=ResultsConfig)
    liveview: LiveViewConfig = Field(default_factory=LiveViewConfig)
    drift: DriftConfig = Field(default_factory=DriftConfig)
    shutdown_timeout_s: float = Field(
        DEFAULT_SHUTDOWN_TIMEOUT_S,
        gt=0.0,
        le=600.0,
        description="On SIGTERM/SIGINT, time allowed to score and publish the frames already accepted.",
    )

    @field_validator("cameras")
    @classmethod
    def _camera_names_unique(cls, cameras: list[CameraConfig]) -> list[CameraConfig]:
        first_index: dict[str, int] = {}
        for index, cam in enumerate(cameras):
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
