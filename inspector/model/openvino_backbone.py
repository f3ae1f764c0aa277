"""The backbone on OpenVINO's CPU runtime: converted in-process from the torch extractor, float32 pinned, checked at load."""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from inspector.core.errors import InspectorError
from inspector.model.backbone import FeatureExtractor

PROBE_REL_TOL = 1e-4  # largest relative difference of any output on the probe image (issue 33)
PROBE_SEED = 0
PRECISION = "f32"  # INFERENCE_PRECISION_HINT: OpenVINO's CPU default is bf16 where the CPU has bf16 units
CACHE_DIR_NAME = "openvino"  # under $STATE_DIRECTORY (systemd) or the user's cache directory
CACHE_KEY_CHARS = 16


class Extractor(Protocol):
    """What runs the backbone: the torch extractor or its OpenVINO conversion."""

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(pooled [B, D], [stride-4, -8, -16 maps]) of a normalised [B, 3, H, W] batch."""
        ...


class OpenVinoError(InspectorError):
    """OpenVINO cannot run the backbone here: not installed, conversion failed, or features differ."""


@dataclass(frozen=True)
class Conversion:
    """How the OpenVINO backbone came to be: time spent and what it was checked against."""

    seconds: float
    cached: bool
    probe_rel_diff: float
    threads: int


class OpenVinoExtractor:
    """Called like a :class:`FeatureExtractor`: (pooled [B, D], [stride-4, -8, -16 maps]) of a [B, 3, H, W] batch."""

    def __init__(
        self, compiled: Any, conversion: Conversion, module: FeatureExtractor, shape: tuple[int, ...]
    ) -> None:
        """Wrap a compiled model (its first output the pooled feature, then the three stages).

        ``module`` (the torch extractor) runs inputs of another height or width than ``shape`` [1, 3, H, W],
        the one the model was converted and checked for.
        """
        self._module = module
        self._size = tuple(shape[1:])
        self._compiled = compiled
        self._request = compiled.create_infer_request()
        self._lock = threading.Lock()  # one infer request: calls from two threads take turns
        self.conversion = conversion

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run the network on a normalised float32 batch (any memory layout); outputs are fresh CPU tensors."""
        if tuple(x.shape[1:]) != self._size:
            with torch.inference_mode():
                pooled, stages = self._module(x)
            return pooled, stages
        batch = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        with self._lock:
            result = self._request.infer([batch])  # copies its outputs (share_outputs is off)
            outputs = [torch.from_numpy(np.asarray(result[out])) for out in self._compiled.outputs]
        return outputs[0], outputs[1:]


def default_cache_dir() -> Path:
    """$STATE_DIRECTORY/openvino under systemd, else $XDG_CACHE_HOME (or ~/.cache)/inspector/openvino."""
    state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    if state:
        return Path(state) / CACHE_DIR_NAME
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "inspector" / CACHE_DIR_NAME


def cache_key(name: str, weights_sha256: str, shape: tuple[int, ...]) -> str:
    """The converted model's file stem: the network, its weights, the input shape and the converter's version."""
    import openvino
    import timm

    text = (
        f"{name}|{weights_sha256}|{shape[1:]}|{openvino.__version__}|{torch.__version__}|{timm.__version__}"
    )
    return f"{name}-{hashlib.sha256(text.encode()).hexdigest()[:CACHE_KEY_CHARS]}"


def _convert(module: FeatureExtractor, probe: torch.Tensor) -> Any:
    """The torch extractor as an OpenVINO model with a dynamic batch (traced on the probe; no telemetry)."""
    import openvino
    from openvino.frontend import FrontEndManager
    from openvino.frontend.pytorch.ts_decoder import TorchScriptPythonDecoder

    with warnings.catch_warnings():  # torch.jit.trace's deprecation and tracer warnings: nothing to act on
        warnings.simplefilter("ignore")
        decoder = TorchScriptPythonDecoder(module, example_input=(probe,))
    frontend = FrontEndManager().load_by_framework("pytorch")
    model = frontend.convert(frontend.load(decoder))
    model.reshape({model.inputs[0]: openvino.PartialShape([-1, *probe.shape[1:]])})
    return model


def _load_or_convert(
    core: Any, module: FeatureExtractor, probe: torch.Tensor, key: str, cache_dir: Path | None
) -> tuple[Any, bool]:
    """The converted model from the cache directory, else converted now (and saved there when writable)."""
    import openvino

    xml = cache_dir / f"{key}.xml" if cache_dir is not None else None
    if xml is not None and xml.is_file():
        try:
            return core.read_model(str(xml)), True
        except RuntimeError:
            pass  # unreadable: converted again and replaced below
    model = _convert(module, probe)
    if cache_dir is not None and xml is not None:
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".tmp-") as tmp:
                openvino.save_model(model, str(Path(tmp) / f"{key}.xml"), compress_to_fp16=False)
                os.replace(Path(tmp) / f"{key}.bin", cache_dir / f"{key}.bin")  # weights first, then the
                os.replace(Path(tmp) / f"{key}.xml", xml)  # file a reader looks for
        except OSError:
            pass  # a read-only cache: convert at every load
    return model, False


def relative_difference(got: list[torch.Tensor], want: list[torch.Tensor]) -> float:
    """Largest over the outputs of max |got - want| / max |want| (shapes must agree, else infinity)."""
    worst = 0.0
    for g, w in zip(got, want, strict=True):
        if g.shape != w.shape:
            return float("inf")
        scale = float(w.abs().max()) or 1.0
        worst = max(worst, float((g.float() - w.float()).abs().max()) / scale)
    return worst


def build_openvino(
    module: FeatureExtractor,
    probe: torch.Tensor,
    weights_key: tuple[str, str],
    cache_dir: Path | None,
    threads: int,
) -> OpenVinoExtractor:
    """Convert ``module`` for inputs shaped like ``probe`` and check it against torch on the probe.

    Args:
        module: the torch extractor (on the CPU).
        probe: [1, 3, H, W] normalised probe image; the converted model takes any batch of this H, W.
        weights_key: (backbone name, weights SHA-256): with the versions, the cache file's key.
        cache_dir: where converted models are kept between runs (None: convert at every load).
        threads: OpenVINO's inference threads (one stream; the daemon's torch threads).

    Raises:
        OpenVinoError: OpenVINO does not import or convert, or its features differ from torch's by more
            than PROBE_REL_TOL on the probe (the reason names the difference).
    """
    started = time.perf_counter()
    try:
        import openvino

        core = openvino.Core()
        key = cache_key(weights_key[0], weights_key[1], tuple(probe.shape))
        model, cached = _load_or_convert(core, module, probe, key, cache_dir)
        compiled = core.compile_model(
            model,
            "CPU",
            {
                "INFERENCE_PRECISION_HINT": PRECISION,
                "INFERENCE_NUM_THREADS": max(1, threads),
                "NUM_STREAMS": 1,
                "PERFORMANCE_HINT": "LATENCY",
                "ENABLE_CPU_PINNING": False,  # the cores are shared with the camera processes
            },
        )
    except (ImportError, RuntimeError, ValueError, TypeError) as exc:
        raise OpenVinoError(f"openvino backbone: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
    pinned = compiled.get_property("INFERENCE_PRECISION_HINT")
    if pinned != openvino.Type.f32:  # never let a bf16 default change a score silently
        raise OpenVinoError(f"openvino backbone: inference precision {pinned}, float32 was asked for")
    with torch.inference_mode():
        pooled, stages = module(probe)
    extractor = OpenVinoExtractor(compiled, Conversion(0.0, cached, 0.0, threads), module, tuple(probe.shape))
    got_pooled, got_stages = extractor(probe)
    diff = relative_difference([got_pooled, *got_stages], [pooled, *stages])
    if not diff <= PROBE_REL_TOL:
        raise OpenVinoError(
            f"openvino backbone: features differ from torch's by {diff:.2e} relative on the probe image "
            f"(at most {PROBE_REL_TOL:g} allowed)"
        )
    extractor.conversion = Conversion(time.perf_counter() - started, cached, diff, threads)
    return extractor


def probe_image(height: int, width: int) -> np.ndarray:
    """A fixed BGR uint8 probe image: smooth gradients and seeded noise, the same on every machine."""
    rng = np.random.default_rng(PROBE_SEED)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([xx / max(1, width - 1), yy / max(1, height - 1), (xx + yy) / max(1, height + width)], 2)
    noisy = base * 200.0 + rng.normal(0.0, 20.0, size=base.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def build_or_reason(
    module: FeatureExtractor,
    probe: torch.Tensor,
    weights_key: tuple[str, str],
    cache_dir: Path | None,
    threads: int,
) -> OpenVinoExtractor | str:
    """:func:`build_openvino`, or the reason it was refused (torch then runs the backbone; the caller logs it)."""
    try:
        return build_openvino(module, probe, weights_key, cache_dir, threads)
    except OpenVinoError as exc:
        return str(exc)
