"""Tests for inspector.outputs.assembly: where the archive goes, and which outputs a configuration builds."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry

from inspector.bus.wire import Heartbeat, new_boot_id, rfc3339
from inspector.config.archive import ArchiveConfig
from inspector.config.camera import CameraConfig
from inspector.config.root import InspectorConfig
from inspector.ops.metrics import InspectorMetrics
from inspector.outputs.assembly import OutputContext, Outputs, archive_root
from inspector.outputs.drift import Reference
from tests.support import http_get


def test_archive_root_is_the_directory_else_the_state_directory_else_none(tmp_path: Path) -> None:
    assert archive_root(ArchiveConfig(directory=tmp_path), {}) == tmp_path
    assert archive_root(ArchiveConfig(), {"STATE_DIRECTORY": "/var/lib/inspector:/x"}) == Path(
        "/var/lib/inspector/archive"
    )
    assert archive_root(ArchiveConfig(), {}) is None
    assert archive_root(ArchiveConfig(enabled=False, directory=tmp_path), {}) is None


def test_outputs_build_what_the_config_enables_and_serve_until_closed(tmp_path: Path) -> None:
    boot_id = new_boot_id()
    config = InspectorConfig.model_validate({
        "cameras": [{"name": "cam1", "source": "0"}],
        "archive": {"directory": str(tmp_path / "archive")},
        "results": {"enabled": True, "port": 0},
        "liveview": {"enabled": True, "port": 0},
    })  # fmt: skip
    status = Heartbeat(
        boot_id=boot_id,
        published_at=rfc3339(0),
        state="ready",
        uptime_s=0.0,
        frames_published=0,
        worker_alive=True,
    )
    context = OutputContext(config, boot_id, InspectorMetrics(CollectorRegistry(), include_process_collector=False),
                            lambda: status, {"cam1": Reference(1.0, 0.5)}, env={})  # fmt: skip
    outputs = Outputs(context)
    assert [sink.name for sink in outputs.sinks] == ["drift", "results", "liveview", "archive"]
    ports = outputs.start()
    try:
        assert set(ports) == {"results", "liveview"}
        assert http_get(f"http://127.0.0.1:{ports['liveview']}/")[0] == 200
        assert http_get(f"http://127.0.0.1:{ports['results']}/results/cam1/latest")[0] == 404  # nothing yet
    finally:
        outputs.close()
    assert (tmp_path / "archive").is_dir()  # opened by the archive's thread
    quiet = Outputs(OutputContext(InspectorConfig(cameras=[CameraConfig(name="c", source="0")]), boot_id,
                                  context.metrics, lambda: status, {}, env={}))  # fmt: skip
    assert [sink.name for sink in quiet.sinks] == [
        "drift"
    ]  # no archive without a folder, HTTP off by default
