"""Products at run time: every product's scorer, each camera's active product, changeovers and hot reloads."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from inspector.config.load import ConfigError
from inspector.config.model import ModelConfig
from inspector.config.root import InspectorConfig
from inspector.core.errors import InspectorError
from inspector.model.engine import BackboneCache, Inspector, ScoreResult, calibrated_score_median
from inspector.model.gallery import Gallery
from inspector.model.settings import gallery_setting_conflicts
from inspector.model.signing import load_signers, verify_gallery

T = TypeVar("T")


class Scorer(Protocol):
    """What the worker needs from a scoring engine (``inspector.model.engine.Inspector`` satisfies it)."""

    gallery: Gallery
    config: ModelConfig

    @property
    def feature_bytes(self) -> int:
        """Bytes of gallery features held for scoring."""
        ...

    def score(self, images: list[np.ndarray]) -> list[ScoreResult]:
        """Score a batch of uint8 images."""
        ...


Loader = Callable[[str, Path], Scorer]
"""Loads and fully validates one product's gallery (name, file) into a scorer; raises on any problem."""


class ProductError(InspectorError):
    """An unknown product or camera, or a product that could not be (re)loaded; the message says which."""


@dataclass(frozen=True)
class ProductInfo:
    """What ``status`` reports of one product."""

    name: str
    gallery: Path
    gallery_hash: str
    image_count: int
    backbone: str
    feature_bytes: int
    signed_by: str | None = (
        None  # fingerprint of the key that signed the gallery ([security] gallery_signers)
    )


@dataclass(frozen=True)
class ReloadResult:
    """The outcome of reloading one product: swapped in, or refused with the reason (the old one kept)."""

    product: str
    ok: bool
    gallery_hash: str
    reason: str = ""


class ProductRegistry:
    """Every product's scorer and each camera's active product. Thread-safe.

    The pipeline stamps each frame with its camera's active product as the frame enters, and the worker looks
    the scorer up when a batch starts; a changeover or a reload therefore takes effect between two frames of
    a camera (at one seq) and never inside a batch, and a batch in progress keeps the scorer it started with.
    """

    def __init__(
        self, galleries: Mapping[str, Path], scorers: Mapping[str, Scorer], active: Mapping[str, str]
    ):
        """Start with loaded scorers.

        Args:
            galleries: product -> gallery file (re-read by :meth:`reload`).
            scorers: product -> its scorer, for every product in ``galleries``.
            active: camera -> the product it inspects at start-up.

        Raises:
            ProductError: a camera's product is not in ``scorers``.
        """
        unknown = sorted({p for p in active.values() if p not in scorers})
        if unknown:
            raise ProductError(f"cameras use products without a scorer: {', '.join(unknown)}")
        self._galleries = dict(galleries)
        self._scorers = dict(scorers)
        self._active = dict(active)
        self._lock = threading.Lock()
        self._reload_lock = threading.Lock()
        self._listeners: list[Callable[[str, str, dict[str, Any]], None]] = []

    def listen(self, listener: Callable[[str, str, dict[str, Any]], None]) -> None:
        """Call ``listener(action, subject, detail)`` after each product change (``product_change``, the camera)
        and each reload (``reload``, the product); the audit trail listens."""
        self._listeners.append(listener)

    def _tell(self, action: str, subject: str, detail: dict[str, Any]) -> None:
        for listener in self._listeners:
            listener(action, subject, detail)

    @property
    def products(self) -> list[str]:
        """Product names."""
        with self._lock:
            return sorted(self._scorers)

    @property
    def cameras(self) -> list[str]:
        """Camera names."""
        return list(self._active)

    def scorer(self, product: str) -> Scorer:
        """The scorer of a product now.

        Raises:
            ProductError: unknown product.
        """
        return self._lookup(self._scorers, product, "product")

    def active(self, camera: str) -> str:
        """The product a camera inspects now.

        Raises:
            ProductError: unknown camera.
        """
        return self._lookup(self._active, camera, "camera")

    def _lookup(self, table: Mapping[str, T], key: str, what: str) -> T:
        with self._lock:
            found = table.get(key)
            if found is None:  # the names are listed only for the error, not on every lookup
                known = ", ".join(sorted(table))
                raise ProductError(f"unknown {what} {key!r} (known: {known})")
        return found

    def set_active(self, camera: str, product: str) -> str:
        """Switch a camera to a product (from its next frame on); returns the product it had.

        Raises:
            ProductError: unknown camera or product.
        """
        self.scorer(product)
        previous = self.active(camera)
        with self._lock:
            self._active[camera] = product
        if previous != product:
            self._tell("product_change", camera, {"from": previous, "to": product})
        return previous

    def calibration_of(self, product: str) -> tuple[float | None, float | None]:
        """(image threshold, median image score of the normal images) of a product's gallery, when known."""
        scorer = self.scorer(product)
        cal = scorer.gallery.manifest.calibration
        threshold = cal.image_threshold if cal is not None else None
        return threshold, calibrated_score_median(cal, scorer.config.image_score)

    def info(self, product: str) -> ProductInfo:
        """The status record of a product."""
        scorer = self.scorer(product)
        g = scorer.gallery
        return ProductInfo(
            product, self._galleries[product], g.content_hash, g.manifest.image_count, g.manifest.backbone,
            scorer.feature_bytes, getattr(scorer, "signed_by", None),  # set by product_loader when signers are configured
        )  # fmt: skip

    def reload(self, products: list[str] | None, loader: Loader) -> list[ReloadResult]:
        """Re-read products' gallery files beside the scorers in service and swap the ones that validate.

        A file that fails to load is refused with the reason and its old scorer stays in service. Reloads run
        one at a time; frames keep being scored while the files load.

        Args:
            products: the products to reload; None means all.
            loader: builds and validates a scorer exactly as at start-up.

        Raises:
            ProductError: an unknown product name (nothing is reloaded).
        """
        names = self.products if products is None else products
        for name in names:
            self.scorer(name)
        results = []
        with self._reload_lock:
            for name in names:
                results.append(self._reload_one(name, loader))
        for r in results:
            self._tell("reload", r.product, {"ok": r.ok, "gallery": r.gallery_hash, "reason": r.reason})
        return results

    def _reload_one(self, name: str, loader: Loader) -> ReloadResult:
        old = self.scorer(name)
        try:
            new = loader(name, self._galleries[name])
        except Exception as exc:  # noqa: BLE001 - any failure keeps the old gallery in service, with the reason
            return ReloadResult(name, False, old.gallery.content_hash, f"{type(exc).__name__}: {exc}")
        with self._lock:
            self._scorers[name] = new
        return ReloadResult(name, True, new.gallery.content_hash)


def product_loader(config: InspectorConfig, backbones: BackboneCache) -> Loader:
    """The one way a product's gallery becomes a scorer, at start-up and at every reload.

    :meth:`Inspector.from_gallery` (file read and hashed once, checked against its backbone) plus the daemon's
    rule that a ``[model]``/``[calibration]`` key set in the config must agree with the gallery. With
    ``[security] gallery_signers``, the gallery hash as loaded must carry a valid signature by one of them.

    Raises:
        KeyFileError: a signer's public key file cannot be used.
    """
    signers = load_signers(config.security.gallery_signers)

    def load(name: str, path: Path) -> Scorer:
        scorer = Inspector.from_gallery(path, config.runtime, backbones=backbones, keep_stage_features=False)
        problems = gallery_setting_conflicts(config.model, config.calibration, path, scorer.gallery.manifest)
        if problems:
            raise ConfigError("config", problems)
        if signers:
            scorer.signed_by = verify_gallery(path, scorer.gallery.sha256, signers).fingerprint
        return scorer

    return load


def load_products(config: InspectorConfig, loader: Loader) -> ProductRegistry:
    """Load and validate every product's gallery (each file once); put each camera on its start-up product.

    Raises:
        ConfigError: a config key disagrees with a gallery.
        GalleryError: a gallery is missing, corrupt, or does not match the backbone.
        BackboneError: the backbone weights are unavailable.
        EngineError: a gallery is not calibrated, or the configured device is unusable.
        ProductError: a camera has no product (see ``inspector.config.load.run_problems``).
    """
    galleries = config.product_galleries()
    by_path: dict[Path, Scorer] = {}
    scorers: dict[str, Scorer] = {}
    for name, path in galleries.items():
        key = path.resolve()
        if key not in by_path:
            by_path[key] = loader(name, path)
        scorers[name] = by_path[key]
    active: dict[str, str] = {}
    for cam in config.cameras:
        product = config.product_for(cam)
        if product is None:
            raise ProductError(f"camera {cam.name}: no product (set product, gallery or worker.gallery)")
        active[cam.name] = product
    return ProductRegistry(galleries, scorers, active)
