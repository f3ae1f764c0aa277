"""Synthetic parts: turned-metal flanges under varying light, good or with a labelled defect and its exact mask."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
UInt8Array = npt.NDArray[np.uint8]

DEFECT_TYPES: tuple[str, ...] = ("scratch", "dent", "stain", "missing_piece")

MIN_SIZE_PX = 64
REF_SIZE_PX = 256.0  # pixel amounts below are for a 256 px image and scale with size_px
# Flange geometry, as fractions of the image side.
OUTER_R_FRAC = 0.40
HUB_R_FRAC = 0.19
BORE_R_FRAC = 0.10
BOLT_PITCH_R_FRAC = 0.30
BOLT_R_FRAC = 0.035
BOLT_COUNT = 6
KEYWAY_HALF_W_FRAC = 0.018
KEYWAY_DEPTH_FRAC = 0.03
BEVEL_W_PX = 3.0
# Normal variation (the "good" population).
JITTER_SHIFT_PX = 4.0
JITTER_ROT_DEG = 3.0
GAIN_RANGE = (0.92, 1.08)
CONTRAST_RANGE = (0.93, 1.07)
OFFSET_RANGE_GRAY = (-6.0, 6.0)
GRADIENT_RANGE = (0.06, 0.18)  # relative brightness change across one image side
NOISE_SIGMA_RANGE_GRAY = (1.5, 3.0)
SPEC_RANGE_GRAY = (8.0, 16.0)
SHADOW_OFFSET_PX = 4.0
SHADOW_SOFT_PX = 6.0
SHADOW_DEPTH = 0.45
# Defects.
MASK_WEIGHT_THRESHOLD = 0.25  # a pixel belongs to the mask when the defect weight reaches this
MAX_PLACEMENT_TRIES = 60
DENT_DEPTH_GREY = 80.0  # darkening at the bottom of a dent, grey levels
DEFECT_ZONE_FRAC = (0.13, 0.375)  # radial band of the part surface where defects are placed


@dataclass
class _Scene:
    """Layers of one render; defects edit part/alpha before lighting and noise are applied."""

    xs: FloatArray  # image coordinates of each pixel centre, px
    ys: FloatArray
    u: FloatArray  # part-frame coordinates of each pixel, px
    v: FloatArray
    part: FloatArray  # HxWx3 lit part surface, gray levels
    alpha: FloatArray  # HxW part coverage in [0, 1]
    background: FloatArray  # HxWx3
    to_image: npt.NDArray[np.float64]  # 2x3 affine part frame -> image px
    light_dir: float  # radians, direction the light comes from (image plane)
    scale: float  # size_px / REF_SIZE_PX
    size: int
    lighting: tuple[float, ...]  # gain, contrast, offset, gradient, gradient direction (rad)
    noise: FloatArray  # HxWx3


def _f32(values: Any) -> FloatArray:
    """Converts an array expression to float32."""
    return np.asarray(values, dtype=np.float32)


def _cov(signed_dist: Any) -> FloatArray:
    """Anti-aliased coverage from a signed distance in px (positive inside)."""
    return _f32(np.clip(signed_dist + 0.5, 0.0, 1.0))


def _smooth_noise(rng: np.random.Generator, size: int, cells: int, amp: float) -> FloatArray:
    """Low-frequency 2-D noise: a random grid upsampled with bicubic interpolation."""
    grid = rng.normal(0.0, amp, (cells, cells)).astype(np.float32)
    return _f32(cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC))


def _ring_profile(rng: np.random.Generator, radius: FloatArray, r_max: float) -> FloatArray:
    """Turned-surface grooves: a random 1-D profile along the radius, fine and coarse bands."""
    n = int(r_max * 4) + 16
    fine = cv2.GaussianBlur(rng.normal(0.0, 1.0, (1, n)).astype(np.float32), (0, 0), 1.2)[0]
    coarse = cv2.GaussianBlur(rng.normal(0.0, 1.0, (1, n)).astype(np.float32), (0, 0), 10.0)[0]
    prof = 9.0 * fine / (fine.std() + 1e-6) + 10.0 * coarse / (coarse.std() + 1e-6)
    grid = np.linspace(0.0, r_max + 4.0, n)
    return _f32(np.interp(radius, grid, prof))


def _bevel(dist_inside: Any, width: float) -> FloatArray:
    """Weight of a chamfer band of `width` px just inside an edge (dist_inside=0 on the edge)."""
    return _f32(_cov(dist_inside) * _cov(width - dist_inside))


def _bolt_centres(size: int) -> npt.NDArray[np.float64]:
    """Part-frame centres (px) of the bolt holes, shape (BOLT_COUNT, 2)."""
    ang = np.arange(BOLT_COUNT) * (2 * np.pi / BOLT_COUNT) + np.pi / BOLT_COUNT
    pitch = BOLT_PITCH_R_FRAC * size
    return np.stack([pitch * np.cos(ang), pitch * np.sin(ang)], axis=1)


def _geometry(size: int, u: FloatArray, v: FloatArray, light: float, scale: float) -> tuple[FloatArray, ...]:
    """Part coverage and bevel shading (gray levels) from part-frame coordinates."""
    r, theta = _f32(np.hypot(u, v)), _f32(np.arctan2(v, u))
    r_out, r_bore, r_hub = OUTER_R_FRAC * size, BORE_R_FRAC * size, HUB_R_FRAC * size
    bev = BEVEL_W_PX * scale
    alpha = _cov(r_out - r) * _cov(r - r_bore)
    kw, kd = KEYWAY_HALF_W_FRAC * size, KEYWAY_DEPTH_FRAC * size
    alpha *= 1.0 - _cov(kw - np.abs(u)) * _cov(v + r_bore + kd) * _cov(-v)
    lit = np.cos(theta - light).astype(np.float32)
    shade = 45.0 * _bevel(r_out - r, bev) * lit - 40.0 * _bevel(r - r_bore, bev) * lit
    shade += _bevel(r_hub - r, 1.5 * bev) * (30.0 * lit + 10.0) + 8.0 * (r < r_hub)
    shade -= _bevel(r - r_hub, 2.0 * bev) * 22.0 * np.clip(-lit, 0.0, 1.0)  # shadow below the hub step
    hole_r = BOLT_R_FRAC * size
    for cx, cy in _bolt_centres(size):
        dx, dy = u - np.float32(cx), v - np.float32(cy)
        d = np.hypot(dx, dy)
        alpha *= _cov(d - hole_r)
        shade -= 40.0 * _bevel(d - hole_r, bev) * np.cos(np.arctan2(dy, dx) - light)
    return _f32(alpha), _f32(shade), r, theta


def _build_scene(rng: np.random.Generator, size: int) -> _Scene:
    """Draws every random quantity of a good part (in a fixed order) and renders its layers."""
    scale = size / REF_SIZE_PX
    shift = rng.uniform(-JITTER_SHIFT_PX, JITTER_SHIFT_PX, 2) * scale
    rot = np.deg2rad(rng.uniform(-JITTER_ROT_DEG, JITTER_ROT_DEG))
    light = float(rng.uniform(-np.pi, np.pi))
    cx, cy = size / 2.0 + shift[0], size / 2.0 + shift[1]
    c, s = np.cos(rot), np.sin(rot)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + np.float32(0.5)
    dx, dy = xs - np.float32(cx), ys - np.float32(cy)
    u = (c * dx + s * dy).astype(np.float32)
    v = (-s * dx + c * dy).astype(np.float32)
    alpha, shade, r, theta = _geometry(size, u, v, light, scale)
    spec = rng.uniform(*SPEC_RANGE_GRAY) * np.cos(2.0 * (theta - light))
    gray = 150.0 + _ring_profile(rng, r, OUTER_R_FRAC * size) + spec + shade
    gray += _smooth_noise(rng, size, 6, 3.0)
    tint = np.array([1.0, 0.99, 0.955]) + rng.uniform(-0.015, 0.015, 3)
    part = (gray[..., None] * tint.astype(np.float32)).astype(np.float32)
    bg_gray = rng.uniform(38.0, 50.0) + _smooth_noise(rng, size, 12, 3.0)
    bg_gray += cv2.GaussianBlur(rng.normal(0.0, 4.0, (size, size)).astype(np.float32), (0, 0), 0.8)
    sx, sy = -np.cos(light) * SHADOW_OFFSET_PX * scale, -np.sin(light) * SHADOW_OFFSET_PX * scale
    r_sh = np.hypot(dx - np.float32(sx), dy - np.float32(sy))  # the flange's soft drop shadow
    shadow = np.clip((OUTER_R_FRAC * size - r_sh) / (SHADOW_SOFT_PX * scale) + 0.5, 0.0, 1.0)
    bg_gray *= 1.0 - SHADOW_DEPTH * shadow
    background = (bg_gray[..., None] * np.array([1.0, 1.04, 0.97], np.float32)).astype(np.float32)
    ranges = (GAIN_RANGE, CONTRAST_RANGE, OFFSET_RANGE_GRAY, GRADIENT_RANGE, (-np.pi, np.pi))
    lighting = tuple(float(rng.uniform(lo, hi)) for lo, hi in ranges)
    noise = rng.normal(0.0, rng.uniform(*NOISE_SIGMA_RANGE_GRAY), (size, size, 3)).astype(np.float32)
    to_image = np.array([[c, -s, cx], [s, c, cy]])
    return _Scene(xs, ys, u, v, part, alpha, background, to_image, light, scale, size, lighting, noise)


def _compose(scene: _Scene) -> UInt8Array:
    """Composites part over background, applies lighting variation and sensor noise."""
    gain, contrast, offset, grad, grad_dir = scene.lighting
    img = scene.alpha[..., None] * scene.part + (1.0 - scene.alpha[..., None]) * scene.background
    half = scene.size / 2
    ramp = ((scene.xs - half) * np.cos(grad_dir) + (scene.ys - half) * np.sin(grad_dir)) / scene.size
    img = img * (gain * (1.0 + grad * ramp))[..., None]
    img = (img - 128.0) * contrast + 128.0 + offset + scene.noise
    return np.asarray(np.clip(np.rint(img), 0, 255), dtype=np.uint8)


def _sample_surface_point(rng: np.random.Generator, size: int, clearance: float) -> npt.NDArray[np.float64]:
    """A part-frame point in the defect zone, at least `clearance` px from bolt holes if possible."""
    holes = _bolt_centres(size)
    lo, hi = DEFECT_ZONE_FRAC[0] * size + clearance, DEFECT_ZONE_FRAC[1] * size - clearance
    point = np.zeros(2)
    for _ in range(MAX_PLACEMENT_TRIES):
        rad = np.sqrt(rng.uniform(lo * lo, max(hi, lo + 1.0) ** 2))
        ang = rng.uniform(-np.pi, np.pi)
        point = np.array([rad * np.cos(ang), rad * np.sin(ang)])
        if np.min(np.hypot(*(holes - point).T)) > BOLT_R_FRAC * size + clearance:
            break
    return point


def _to_image(scene: _Scene, pts: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Maps part-frame points (N, 2) to image pixel coordinates."""
    return pts @ scene.to_image[:, :2].T + scene.to_image[:, 2]


def _scratch(scene: _Scene, rng: np.random.Generator) -> FloatArray:
    """Thin curved bright or dark line; returns its weight map."""
    size, holes = scene.size, _bolt_centres(scene.size)
    length = rng.uniform(0.27, 0.38) * size
    pts = np.zeros((2, 2))
    for _ in range(MAX_PLACEMENT_TRIES):
        mid = _sample_surface_point(rng, size, 0.0)
        ang = rng.uniform(0, np.pi)
        bend = rng.uniform(-0.25, 0.25) * length
        t = np.linspace(-0.5, 0.5, 40)[:, None]
        d, n = np.array([np.cos(ang), np.sin(ang)]), np.array([-np.sin(ang), np.cos(ang)])
        pts = mid + t * length * d + (1.0 - 4.0 * t * t) * bend * n
        rad = np.hypot(pts[:, 0], pts[:, 1])
        gap = np.min(np.hypot(pts[:, None, 0] - holes[:, 0], pts[:, None, 1] - holes[:, 1]))
        in_zone = rad.min() > DEFECT_ZONE_FRAC[0] * size and rad.max() < DEFECT_ZONE_FRAC[1] * size
        if in_zone and gap > BOLT_R_FRAC * size + 3.0 * scene.scale:
            break
    thick = max(1, round(int(rng.integers(1, 4)) * scene.scale))
    bright = bool(rng.uniform() < 0.5)
    side = np.array([np.cos(scene.light_dir), np.sin(scene.light_dir)]) * (0.5 * thick + 1.0) * scene.scale
    core = _polyline_coverage(scene, _to_image(scene, pts), thick)
    edge = _polyline_coverage(scene, _to_image(scene, pts) + (side if bright else -side), 1)
    halo = _f32(cv2.GaussianBlur(core, (0, 0), 1.5 * scene.scale))
    halo = 0.5 * np.clip(halo / max(float(halo.max()), 1e-6), 0.0, 1.0)
    main_t, edge_t = (250.0, 70.0) if bright else (45.0, 230.0)
    w_edge = 0.6 * edge * (1.0 - core)
    scene.part += _f32(np.maximum(core, halo)[..., None] * (main_t - scene.part))
    scene.part += _f32(w_edge[..., None] * (edge_t - scene.part))
    return _f32(np.maximum(np.maximum(core, halo), w_edge))


def _polyline_coverage(scene: _Scene, pts_img: npt.NDArray[np.float64], thick: int) -> FloatArray:
    """Anti-aliased coverage (0..1) of an open polyline drawn with the given thickness in px."""
    canvas = np.zeros((scene.size, scene.size), np.float32)
    poly = np.rint((pts_img - 0.5) * 16).astype(np.int32)  # OpenCV puts pixel centres at integers
    cv2.polylines(canvas, [poly], False, 1.0, thick, cv2.LINE_AA, 4)
    return canvas


def _dent(scene: _Scene, rng: np.random.Generator) -> FloatArray:
    """Shaded elliptical dent with a lit rim.

    (No "extra drilled hole" variant: a misplaced hole looks locally like a bolt hole, and SPADE, which matches
    every location against all locations of the nearest good parts, does not see purely positional anomalies;
    see docs/quality.md.)
    """
    scale = scene.scale
    semi_a = rng.uniform(11.0, 16.0) * scale
    semi_b = semi_a * rng.uniform(0.6, 0.9)
    centre = _to_image(scene, _sample_surface_point(rng, scene.size, semi_a + 3.0 * scale)[None])[0]
    rot = rng.uniform(0, np.pi)
    dx, dy = scene.xs - np.float32(centre[0]), scene.ys - np.float32(centre[1])
    ex = (np.cos(rot) * dx + np.sin(rot) * dy) / semi_a
    ey = (-np.sin(rot) * dx + np.cos(rot) * dy) / semi_b
    rho = np.hypot(ex, ey)
    inside = np.clip((1.0 - rho) * semi_b + 0.5, 0.0, 1.0)
    lit = (dx * np.cos(scene.light_dir) + dy * np.sin(scene.light_dir)) / np.float32(semi_a)
    rim = np.exp(-(((rho - 1.0) / 0.07) ** 2)) * np.clip(lit, 0.0, 1.0) * (rho < 1.15)
    delta = inside * (-DENT_DEPTH_GREY - 75.0 * lit * (0.3 + 0.7 * rho * rho)) + 70.0 * rim
    scene.part += _f32(delta)[..., None]
    return _f32(np.maximum(inside, rim > 0.1))


def _stain(scene: _Scene, rng: np.random.Generator) -> FloatArray:
    """Soft-edged, partially transparent brownish (rust / oil) blob."""
    scale = scene.scale
    radius = rng.uniform(12.0, 20.0) * scale
    centre = _to_image(scene, _sample_surface_point(rng, scene.size, 0.8 * radius)[None])[0]
    field = np.zeros((scene.size, scene.size), np.float32)
    for _ in range(int(rng.integers(3, 6))):
        off = rng.normal(0.0, 0.45 * radius, 2)
        sig = rng.uniform(0.4, 0.7) * radius
        d2 = (scene.xs - np.float32(centre[0] + off[0])) ** 2 + (
            scene.ys - np.float32(centre[1] + off[1])
        ) ** 2
        field += np.exp(-d2 / np.float32(2.0 * sig * sig))
    field += _smooth_noise(rng, scene.size, max(4, scene.size // 12), 0.12) * (field > 0.05)
    opacity = rng.uniform(0.65, 0.85)
    weight = np.clip((field - 0.35) / 0.45, 0.0, 1.0)
    weight = weight * weight * (3.0 - 2.0 * weight)  # smoothstep: soft edge
    colour = np.array([0.35, 0.55, 0.9]) * rng.uniform(0.85, 1.0, 3)  # BGR multiplier: brown/rust
    stained = scene.part * colour.astype(np.float32)
    scene.part += _f32(opacity * weight)[..., None] * (stained - scene.part)
    return _f32(weight)


def _missing_piece(scene: _Scene, rng: np.random.Generator) -> FloatArray:
    """Irregular chunk broken off the outer edge between two bolt holes, showing background."""
    size, scale = scene.size, scene.scale
    ang = np.pi / BOLT_COUNT * (2 * int(rng.integers(BOLT_COUNT))) + rng.uniform(-0.25, 0.25)
    r0 = rng.uniform(14.0, 21.0) * scale
    centre = np.array([np.cos(ang), np.sin(ang)]) * (OUTER_R_FRAC * size + rng.uniform(-0.2, 0.2) * r0)
    du, dv = scene.u - np.float32(centre[0]), scene.v - np.float32(centre[1])
    phi = np.arctan2(dv, du)
    wobble = np.zeros_like(phi)
    for k in (2, 3, 5, 7):
        wobble += rng.uniform(0.04, 0.12) * np.cos(k * phi + rng.uniform(0, 2 * np.pi))
    removed = _cov(r0 * (1.0 + wobble) - np.hypot(du, dv))
    good_alpha = scene.alpha.copy()
    scene.alpha *= 1.0 - removed
    return _f32(removed * good_alpha)


_DEFECTS: dict[str, Callable[[_Scene, np.random.Generator], FloatArray]] = {
    "scratch": _scratch,
    "dent": _dent,
    "stain": _stain,
    "missing_piece": _missing_piece,
}


def render_part(
    rng: np.random.Generator, size_px: int = 256, defect: str | None = None
) -> tuple[UInt8Array, UInt8Array]:
    """Renders one turned-steel flange, optionally with a defect.

    All good-part randomness (pose, lighting, texture, noise) is drawn first, so the same rng state gives the
    same part with and without a defect; defect parameters are drawn afterwards.

    Args:
        rng: Source of randomness; consumed.
        size_px: Side of the square image in pixels (at least MIN_SIZE_PX).
        defect: None for a good part, else one of DEFECT_TYPES.

    Returns:
        (BGR uint8 image HxWx3, uint8 mask HxW with 255 on defect pixels; all zero for a good part).

    Raises:
        ValueError: If `defect` is unknown or `size_px` is too small.
    """
    if defect is not None and defect not in _DEFECTS:
        raise ValueError(f"defect must be None or one of {DEFECT_TYPES}, got {defect!r}")
    if size_px < MIN_SIZE_PX:
        raise ValueError(f"size_px must be >= {MIN_SIZE_PX}, got {size_px}")
    scene = _build_scene(rng, size_px)
    mask = np.zeros((size_px, size_px), np.uint8)
    if defect is not None:
        on_part = scene.alpha > 0.5
        weight = _DEFECTS[defect](scene, rng)
        mask[(weight >= MASK_WEIGHT_THRESHOLD) & on_part] = 255
    return _compose(scene), mask
