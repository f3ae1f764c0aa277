"""Tests for the backbones: offline loading (network blocked), weight checks, clear errors, pyramid shapes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from inspector.config.model import BackboneName
from inspector.model import backbone as backbone_module
from inspector.model.backbone import (
    LITE0_WEIGHTS_SHA256,
    BackboneError,
    FeatureExtractor,
    build_backbone,
    lite0_weights_path,
)
from inspector.model.digest import file_sha256
from tests.support import REPO_ROOT

INPUT_PX = 128
STRIDES = (4, 8, 16)
LITE0_CHANNELS = (24, 40, 112)
LITE0_POOLED = 1280
RELU6_MAX = 6.0  # Lite0's head is BatchNorm + ReLU6, so every pooled value lies in [0, 6]
RESNET18_CHANNELS = (64, 128, 256)
RESNET18_POOLED = 512
SUBPROCESS_TIMEOUT_S = 240


def _one_line_error_naming(exc: BaseException, path: Path) -> str:
    text = str(exc)
    assert str(path) in text, text
    assert "\n" not in text, text
    return text


def _run(extractor: FeatureExtractor, batch: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    with torch.inference_mode():
        pooled, stages = extractor(batch)
    return pooled, stages


def _images(n: int, seed: int) -> torch.Tensor:
    """A batch of structured (not white-noise) inputs in the network's input range [-1, 1]."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 8, 8, generator=gen) * 2 - 1
    return torch.nn.functional.interpolate(
        coarse, size=(INPUT_PX, INPUT_PX), mode="bilinear", align_corners=False
    )


@pytest.fixture(scope="module")
def lite0() -> FeatureExtractor:
    extractor, _ = build_backbone("efficientnet_lite0")
    return extractor


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "resnet18_random.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    return path


def test_packaged_lite0_weights_file_has_the_pinned_sha256() -> None:
    path = lite0_weights_path()
    assert path.is_file()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == LITE0_WEIGHTS_SHA256
    _, spec = build_backbone("efficientnet_lite0")
    assert spec.weights_sha256 == LITE0_WEIGHTS_SHA256


def test_tampered_packaged_lite0_file_is_refused_by_its_sha256(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = tmp_path / "efficientnet-lite0.pth"
    data = bytearray(lite0_weights_path().read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit deep inside a tensor: still a loadable file
    copy.write_bytes(bytes(data))
    monkeypatch.setattr(backbone_module, "lite_weights_path", lambda name="efficientnet_lite0": copy)
    with pytest.raises(BackboneError) as info:
        build_backbone("efficientnet_lite0")
    text = _one_line_error_naming(info.value, copy)
    assert LITE0_WEIGHTS_SHA256 in text and file_sha256(copy) in text


BLOCKED_SCRIPT = r"""
import json, socket, sys
from pathlib import Path
attempts = []
def blocked(*args, **kwargs):
    attempts.append(repr(args)[:200])
    raise OSError("network access blocked by test")
socket.socket.connect = blocked
socket.socket.connect_ex = blocked
socket.create_connection = blocked
socket.getaddrinfo = blocked
try:
    socket.create_connection(("127.0.0.1", 9), timeout=1)
    sys.exit("the network block did not work")
except OSError:
    pass
attempts.clear()

import pathlib
import torch
from inspector.model.backbone import build_backbone
out = {}
x = torch.linspace(-1, 1, 2 * 3 * 96 * 96).reshape(2, 3, 96, 96)
for name, weights in (("efficientnet_lite0", None), ("resnet18", pathlib.Path(sys.argv[1]))):
    model, spec = build_backbone(name, weights)
    with torch.inference_mode():
        pooled, stages = model(x)
    out[name] = {"pooled": list(pooled.shape), "finite": bool(torch.isfinite(pooled).all()),
                 "sha": spec.weights_sha256}
out["attempts"] = attempts
print(json.dumps(out))
"""


def test_backbones_load_and_extract_with_the_network_blocked(tmp_path: Path, resnet18_file: Path) -> None:
    script = tmp_path / "blocked.py"
    script.write_text(BLOCKED_SCRIPT)
    empty_cache = tmp_path / "cache"
    empty_cache.mkdir()
    env = {
        **os.environ,
        "TORCH_HOME": str(empty_cache),  # no cached hub downloads to fall back on
        "HF_HOME": str(empty_cache),
        "XDG_CACHE_HOME": str(empty_cache),
    }
    proc = subprocess.run(
        [sys.executable, str(script), str(resnet18_file)],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
        env=env,
        cwd=REPO_ROOT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["attempts"] == []
    assert out["efficientnet_lite0"] == {
        "pooled": [2, LITE0_POOLED],
        "finite": True,
        "sha": LITE0_WEIGHTS_SHA256,
    }
    assert out["resnet18"] == {
        "pooled": [2, RESNET18_POOLED],
        "finite": True,
        "sha": file_sha256(resnet18_file),
    }


def test_lite0_pyramid_is_24_40_112_channels_at_strides_4_8_16_and_pooled_1280(
    lite0: FeatureExtractor,
) -> None:
    pooled, stages = _run(lite0, _images(2, seed=1))
    assert pooled.shape == (2, LITE0_POOLED)
    assert [tuple(s.shape) for s in stages] == [
        (2, c, INPUT_PX // st, INPUT_PX // st) for c, st in zip(LITE0_CHANNELS, STRIDES, strict=True)
    ]
    _, spec = build_backbone("efficientnet_lite0")
    assert spec.stage_channels == LITE0_CHANNELS and spec.pooled_dim == LITE0_POOLED
    assert spec.input_scale == "minus1_1"


def test_lite0_holds_exactly_the_packaged_tensors_in_matching_roles(lite0: FeatureExtractor) -> None:
    stored = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    loaded = lite0.state_dict()
    assert len(stored) == len(loaded)
    for (src_name, src), (dst_name, dst) in zip(stored.items(), loaded.items(), strict=True):
        # The loader maps by position; a BN weight must land on a BN weight, a running_var on a running_var.
        assert src_name.rsplit(".", 1)[-1] == dst_name.rsplit(".", 1)[-1], (src_name, dst_name)
        assert torch.equal(src, dst), (src_name, dst_name)
    fresh = build_backbone("efficientnet_lite0", random_weights=True)[0].state_dict()
    running_vars = [k for k in loaded if k.endswith("running_var")]
    assert running_vars and all(torch.equal(fresh[k], torch.ones_like(fresh[k])) for k in running_vars)
    assert not any(torch.equal(loaded[k], fresh[k]) for k in running_vars)  # trained statistics, not init


def test_lite0_features_are_deterministic_image_dependent_and_relu6_bounded(lite0: FeatureExtractor) -> None:
    x = _images(4, seed=2)
    pooled_a, stages_a = _run(lite0, x)
    pooled_b, _ = _run(lite0, x.clone())
    assert torch.equal(pooled_a, pooled_b)
    assert not lite0.training and not any(p.requires_grad for p in lite0.parameters())
    assert float(pooled_a.min()) >= 0.0 and float(pooled_a.max()) <= RELU6_MAX
    norms = pooled_a.norm(dim=1)
    assert bool((norms > 0).all()) and float(norms.max()) <= RELU6_MAX * LITE0_POOLED**0.5
    # Different images give different pooled features and stage maps.
    for i in range(1, 4):
        assert float((pooled_a[0] - pooled_a[i]).norm()) > 1e-3 * float(norms[0])
        assert not torch.allclose(stages_a[0][0], stages_a[0][i])


def test_lite0_user_weights_file_of_garbage_or_truncated_is_one_line_error_naming_it(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00not a torch file" * 100)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(lite0_weights_path().read_bytes()[:100_000])
    for path in (garbage, truncated):
        with pytest.raises(BackboneError) as info:
            build_backbone("efficientnet_lite0", path)
        _one_line_error_naming(info.value, path)


def test_lite0_user_weights_file_of_another_architecture_is_refused(
    tmp_path: Path, resnet18_file: Path
) -> None:
    with pytest.raises(BackboneError) as info:
        build_backbone("efficientnet_lite0", resnet18_file)
    assert "does not match the Lite0 architecture" in _one_line_error_naming(info.value, resnet18_file)


def test_lite0_user_copy_of_the_packaged_weights_loads(tmp_path: Path) -> None:
    copy = tmp_path / "lite0_copy.pth"
    shutil.copyfile(lite0_weights_path(), copy)
    _, spec = build_backbone("efficientnet_lite0", copy)
    assert spec.weights_sha256 == LITE0_WEIGHTS_SHA256


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "wide_resnet50_2"])
def test_torchvision_backbone_without_a_weights_file_names_the_field(name: BackboneName) -> None:
    with pytest.raises(BackboneError) as info:
        build_backbone(name)
    assert f"runtime.weights.{name}" in str(info.value)


def test_torchvision_missing_weights_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "resnet50.pth"
    with pytest.raises(BackboneError) as info:
        build_backbone("resnet50", missing)
    assert "not found" in _one_line_error_naming(info.value, missing)


def test_state_dict_of_another_architecture_is_refused_naming_the_file(resnet18_file: Path) -> None:
    with pytest.raises(BackboneError) as info:
        build_backbone("resnet50", resnet18_file)
    text = _one_line_error_naming(info.value, resnet18_file)
    assert "resnet50" in text and "does not match" in text


def test_state_dict_missing_one_tensor_is_refused_by_strict_loading(
    tmp_path: Path, resnet18_file: Path
) -> None:
    state = torch.load(resnet18_file, weights_only=True)
    del state["layer2.0.conv1.weight"]
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(BackboneError) as info:
        build_backbone("resnet18", path)
    _one_line_error_naming(info.value, path)


def test_file_that_is_not_a_tensor_state_dict_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "numbers.pth"
    torch.save({"conv1.weight": 3, "fc.bias": [1, 2]}, path)
    with pytest.raises(BackboneError) as info:
        build_backbone("resnet18", path)
    assert "state dict of tensors" in _one_line_error_naming(info.value, path)


class _Payload:
    """Unpickling this runs a command that creates a marker file (must never happen)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_pickle_payload_in_a_weights_file_is_refused_and_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": _Payload(marker)}, path)
    with pytest.raises(BackboneError) as info:
        build_backbone("resnet18", path)
    _one_line_error_naming(info.value, path)
    assert not marker.exists()


def test_resnet18_state_dict_loads_strictly_with_stages_64_128_256_and_pooled_512(
    resnet18_file: Path,
) -> None:
    extractor, spec = build_backbone("resnet18", resnet18_file)
    saved = torch.load(resnet18_file, weights_only=True)
    loaded = {k.removeprefix("model."): v for k, v in extractor.state_dict().items()}
    assert loaded.keys() == saved.keys() and all(torch.equal(saved[k], v) for k, v in loaded.items())
    assert spec.weights_sha256 == file_sha256(resnet18_file)
    assert spec.input_scale == "imagenet" and spec.stage_channels == RESNET18_CHANNELS
    pooled, stages = _run(extractor, _images(2, seed=3))
    assert pooled.shape == (2, RESNET18_POOLED) == (2, spec.pooled_dim)
    assert [tuple(s.shape) for s in stages] == [
        (2, c, INPUT_PX // st, INPUT_PX // st) for c, st in zip(RESNET18_CHANNELS, STRIDES, strict=True)
    ]


def test_state_dict_wrapped_under_state_dict_key_is_accepted(tmp_path: Path, resnet18_file: Path) -> None:
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": torch.load(resnet18_file, weights_only=True)}, path)
    direct, _ = build_backbone("resnet18", resnet18_file)
    wrapped, _ = build_backbone("resnet18", path)
    x = _images(1, seed=4)
    assert np.array_equal(_run(direct, x)[0].numpy(), _run(wrapped, x)[0].numpy())


@pytest.mark.parametrize(
    ("name", "sha256", "channels"),
    [
        ("efficientnet_lite1", backbone_module.LITE1_WEIGHTS_SHA256, (24, 40, 112)),
        ("efficientnet_lite2", backbone_module.LITE2_WEIGHTS_SHA256, (24, 48, 120)),
    ],
)
def test_bigger_lite_backbones_load_their_packaged_weights_pinned_and_give_the_stated_pyramid(
    name: str, sha256: str, channels: tuple[int, int, int]
) -> None:
    path = backbone_module.lite_weights_path(name)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha256
    model, spec = build_backbone(name)
    assert (spec.weights_sha256, spec.stage_channels, spec.pooled_dim) == (sha256, channels, 1280)
    stored = torch.load(path, map_location="cpu", weights_only=True)
    loaded = list(model.model.state_dict().values())
    assert len(stored) == len(loaded) and all(
        torch.equal(a, b) for a, b in zip(stored.values(), loaded, strict=True)
    )
    x = torch.rand(1, 3, 64, 96) * 2 - 1
    pooled, stages = model(x)
    assert pooled.shape == (1, 1280)
    assert [tuple(s.shape[1:]) for s in stages] == [
        (c, 64 // r, 96 // r) for c, r in zip(channels, (4, 8, 16), strict=True)
    ]


def test_tampered_packaged_lite2_file_is_refused_by_its_sha256(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = tmp_path / "efficientnet-lite2.pth"
    data = bytearray(backbone_module.lite_weights_path("efficientnet_lite2").read_bytes())
    data[len(data) // 2] ^= 0x01
    copy.write_bytes(bytes(data))
    monkeypatch.setattr(backbone_module, "lite_weights_path", lambda name="efficientnet_lite2": copy)
    with pytest.raises(BackboneError) as info:
        build_backbone("efficientnet_lite2")
    assert backbone_module.LITE2_WEIGHTS_SHA256 in str(info.value) and str(copy) in str(info.value)
