"""Tests for inspector.capture.aravis: Aravis loads only for a genicam camera, and its absence is a clear error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support import REPO_ROOT

TIMEOUT_S = 300

WITHOUT_GI = """
import sys, threading
sys.modules["gi"] = None  # as on a machine without python3-gi
from inspector.capture.manager import CaptureManager
from inspector.capture.shared import CaptureError
from inspector.config.camera import CameraConfig
camera = CameraConfig(name="line3", source="192.168.10.21", kind="genicam")
try:
    CaptureManager([camera], threading.Event()).start()
except CaptureError as exc:
    print(exc)
"""

FILE_CAMERA_ONLY = """
import sys, threading
from pathlib import Path
import cv2, numpy as np
from inspector.capture.manager import CaptureManager
from inspector.config.camera import CameraConfig
from inspector.daemon.linecontrol import LineControl  # the daemon's trigger path, imported as it runs
def main():
    folder = Path(sys.argv[1])
    cv2.imwrite(str(folder / "a.png"), np.zeros((8, 8, 3), np.uint8))
    manager = CaptureManager([CameraConfig(name="f", source=str(folder))], threading.Event())
    manager.start()
    frames = []
    while not frames:
        frames = manager.get_frames(1, 1.0)
    manager.stop()
    print("frames", len(frames), "gi loaded", "gi" in sys.modules)
if __name__ == "__main__":
    main()
"""


def run(code: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=REPO_ROOT, capture_output=True, text=True,
        timeout=TIMEOUT_S, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def test_a_genicam_camera_without_aravis_installed_is_an_error_naming_camera_and_packages() -> None:
    message = run(WITHOUT_GI)
    assert message.startswith("camera line3: kind genicam needs Aravis 0.8 through GObject introspection")
    assert "gir1.2-aravis-0.8" in message and "python3-gi" in message and "tools/bootstrap.sh" in message


def test_cameras_of_other_kinds_never_load_gi(tmp_path: Path) -> None:
    assert run(FILE_CAMERA_ONLY, str(tmp_path)) == "frames 1 gi loaded False"
