"""The test config builder writes TOML that reads back as the tables it was given."""

from __future__ import annotations

import tomllib
from pathlib import Path

from inspector.config.root import InspectorConfig
from tests.toml_config import BATCHING, LOGGING, daemon_toml, video_camera


def test_daemon_toml_reads_back_as_its_tables_with_shared_defaults_and_quoted_paths(tmp_path: Path) -> None:
    video = tmp_path / 'odd "name".avi'
    text = daemon_toml(
        products=[{"name": "a", "gallery": tmp_path / "a.safetensors"}],
        cameras=[video_camera("line", video, 5.0, trigger="external", product="a")],
        bus={"bind": "tcp://127.0.0.1:5555", "heartbeat_interval_s": 0.5},
        security={"gallery_signers": ["x.pub", "y.pub"]},
        metrics={"enabled": False},
    )
    data = tomllib.loads(text)
    assert data["shutdown_timeout_s"] == 30
    assert data["products"] == [{"name": "a", "gallery": str(tmp_path / "a.safetensors")}]
    assert data["cameras"] == [
        {
            "name": "line",
            "source": str(video),
            "loop": True,
            "fps": 5.0,
            "trigger": "external",
            "product": "a",
        }
    ]
    assert data["batching"] == dict(BATCHING) and data["logging"] == dict(LOGGING)
    assert data["security"]["gallery_signers"] == ["x.pub", "y.pub"]
    config = InspectorConfig.model_validate({k: v for k, v in data.items() if k != "security"})
    assert config.cameras[0].name == "line" and config.batching.max_batch == BATCHING["max_batch"]
