"""The root of the configuration tree: every section, environment overrides over the TOML file."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from inspector.config.archive import ArchiveConfig
from inspector.config.batching import BatchingConfig
from inspector.config.bus import BusConfig
from inspector.config.calibration import CalibrationConfig
from inspector.config.camera import CameraConfig
from inspector.config.control import ControlConfig
from inspector.config.drift import DriftConfig
from inspector.config.liveview import LiveViewConfig
from inspector.config.logs import LoggingConfig
from inspector.config.metrics import MetricsConfig
from inspector.config.model import ModelConfig
from inspector.config.mqtt import MqttConfig
from inspector.config.opcua import OpcUaConfig
from inspector.config.parts import PartsConfig
from inspector.config.products import ProductConfig
from inspector.config.results import ResultsConfig
from inspector.config.review import ReviewConfig
from inspector.config.runtime import RuntimeConfig
from inspector.config.security import SecurityConfig
from inspector.config.sources import ENV_NESTED_DELIMITER, ENV_PREFIX
from inspector.config.supervision import SupervisionConfig
from inspector.config.triggers import TriggersConfig
from inspector.config.worker import WorkerConfig

MAX_CAMERAS = 64
MAX_PRODUCTS = 32  # every product's gallery is loaded at start-up: a bounded number
DEFAULT_SHUTDOWN_TIMEOUT_S = 10.0


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
    products: list[ProductConfig] = Field(
        default_factory=list, max_length=MAX_PRODUCTS, description="Products (recipes) and their galleries."
    )
    worker: WorkerConfig = Field(default_factory=WorkerConfig)
    cameras: list[CameraConfig] = Field(
        default_factory=list, max_length=MAX_CAMERAS, description="Cameras (names unique)."
    )
    batching: BatchingConfig = Field(default_factory=BatchingConfig)
    bus: BusConfig = Field(default_factory=BusConfig)
    triggers: TriggersConfig = Field(default_factory=TriggersConfig)
    control: ControlConfig = Field(default_factory=ControlConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    archive: ArchiveConfig = Field(default_factory=ArchiveConfig)
    parts: PartsConfig = Field(default_factory=PartsConfig)
    results: ResultsConfig = Field(default_factory=ResultsConfig)
    liveview: LiveViewConfig = Field(default_factory=LiveViewConfig)
    review: ReviewConfig = Field(default_factory=ReviewConfig)
    drift: DriftConfig = Field(default_factory=DriftConfig)
    opcua: OpcUaConfig = Field(default_factory=OpcUaConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    security: SecurityConfig = Field(default_factory=SecurityConfig)
    supervision: SupervisionConfig = Field(default_factory=SupervisionConfig)
    shutdown_timeout_s: float = Field(
        DEFAULT_SHUTDOWN_TIMEOUT_S,
        gt=0.0,
        le=600.0,
        description="On SIGTERM/SIGINT, time allowed to score and publish the frames already accepted.",
    )

    @field_validator("cameras")
    @classmethod
    def _camera_names_unique(cls, cameras: list[CameraConfig]) -> list[CameraConfig]:
        _refuse_duplicate_names("cameras", [c.name for c in cameras])
        return cameras

    @field_validator("products")
    @classmethod
    def _product_names_unique(cls, products: list[ProductConfig]) -> list[ProductConfig]:
        _refuse_duplicate_names("products", [p.name for p in products])
        return products

    @field_validator("cameras")
    @classmethod
    def _camera_products_known(cls, cameras: list[CameraConfig], info: ValidationInfo) -> list[CameraConfig]:
        """Every camera's product exists; a gallery file's implicit product does not take another's name."""
        products = {p.name: p.gallery for p in info.data.get("products", [])}
        worker = info.data.get("worker")
        implicit = (
            [("worker.gallery", worker.gallery)] if worker is not None and worker.gallery is not None else []
        )
        implicit += [
            (f"cameras.{i}.gallery", c.gallery) for i, c in enumerate(cameras) if c.gallery is not None
        ]
        for field, path in implicit:
            known = products.setdefault(path.stem, path)
            if known != path:
                raise ValueError(
                    f"{field} {path} would be product {path.stem!r}, already {known}: name it in [[products]]"
                )
        for index, cam in enumerate(cameras):
            if cam.product is not None and cam.product not in products:
                raise ValueError(
                    f"cameras.{index}.product {cam.product!r} is not a product (known: {', '.join(sorted(products)) or 'none'})"
                )
        return cameras

    def product_galleries(self) -> dict[str, Path]:
        """Every product the daemon loads: the [[products]] entries, then one per gallery file named in
        ``worker.gallery`` or a camera's ``gallery`` (the product is named after the file, without suffix)."""
        galleries = {p.name: p.gallery for p in self.products}
        for path in self._implicit_galleries():
            galleries.setdefault(path.stem, path)
        return galleries

    def product_for(self, camera: CameraConfig) -> str | None:
        """The product a camera inspects at start-up: its ``product``, its own gallery's, else worker.gallery's."""
        if camera.product is not None:
            return camera.product
        gallery = camera.gallery if camera.gallery is not None else self.worker.gallery
        return gallery.stem if gallery is not None else None

    def gallery_for(self, camera: CameraConfig) -> Path | None:
        """The gallery file of the product a camera inspects at start-up."""
        product = self.product_for(camera)
        return self.product_galleries().get(product) if product is not None else None

    def _implicit_galleries(self) -> list[Path]:
        paths = [self.worker.gallery] if self.worker.gallery is not None else []
        return paths + [c.gallery for c in self.cameras if c.gallery is not None]

    @property
    def external_cameras(self) -> list[str]:
        """Cameras whose frames are scored only when a trigger picks them."""
        return [c.name for c in self.cameras if c.trigger == "external"]

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


def _refuse_duplicate_names(field: str, names: list[str]) -> None:
    """Raise naming the first entry whose name repeats an earlier one (``field.i.name duplicates field.j.name``)."""
    first_index: dict[str, int] = {}
    for index, name in enumerate(names):
        if name in first_index:
            raise ValueError(f"{field}.{index}.name {name!r} duplicates {field}.{first_index[name]}.name")
        first_index[name] = index
