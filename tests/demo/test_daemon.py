"""Tests for inspector.demo.daemon: the whole demo (gallery, video, in-process daemon, bus) on a short line."""

from __future__ import annotations

import io
from pathlib import Path

from inspector.demo.daemon import DaemonDemoSettings, run_daemon_demo


def test_demo_prints_a_verdict_per_part_matching_its_label_and_exits_0(tmp_path: Path) -> None:
    settings = DaemonDemoSettings(frames=8, fps=10.0, gallery_images=30)
    out = io.StringIO()
    assert run_daemon_demo(tmp_path, out, settings) == 0
    lines = out.getvalue().splitlines()
    verdicts = [line for line in lines if " line1 seq=" in line]
    assert [int(line.split("seq=")[1].split()[0]) for line in verdicts] == list(range(8))
    for line in verdicts:
        expected = "PASS" if line.endswith("[part: good]") else "FAIL"
        assert f" {expected} " in line, line
    assert any("inspector tail --connect tcp://127.0.0.1:" in line for line in lines)
    assert lines[-1] == "demo: 8/8 parts got the expected verdict (2 defective, 0 without a verdict)"
