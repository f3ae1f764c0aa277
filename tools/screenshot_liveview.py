"""Screenshot of the live view for the README: the demo line on two cameras, in headless Chromium.

Builds the demo gallery, runs the daemon in this process with two video-file cameras and the live view on,
opens the page in Debian's chromium (driven by Selenium through chromium-driver), waits until both cameras
show a picture and one of them shows a FAIL, and saves the window.

    .venv/bin/python tools/screenshot_liveview.py docs/images/liveview.png
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import zmq
from prometheus_client import CollectorRegistry
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from inspector.config.camera import CameraConfig
from inspector.config.liveview import LiveViewConfig
from inspector.daemon.lifecycle import Daemon
from inspector.demo.daemon import DaemonDemoSettings, build_demo_gallery, demo_config
from inspector.demo.data import write_demo_video
from inspector.ops.sdnotify import SdNotifier

CAMERAS = {"line1": 3, "line2": 11}  # camera -> video seed
WAIT_S = 300.0
POLL_S = 0.2
WINDOW = "1280,900"
SIZE_PX = 320


def chromium() -> WebDriver:
    """Headless Chromium (Debian packages chromium and chromium-driver)."""
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if binary is None or driver is None:
        raise SystemExit("needs Debian packages chromium and chromium-driver (tools/bootstrap.sh --test)")
    options = Options()
    options.binary_location = binary
    for arg in ("--headless=new", "--disable-gpu", "--disable-dev-shm-usage", f"--window-size={WINDOW}"):
        options.add_argument(arg)
    if os.geteuid() == 0:
        options.add_argument("--no-sandbox")
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def wait_for(driver: WebDriver) -> None:
    """Until every camera shows a picture and some camera's verdict is FAIL."""
    script = "return [...document.querySelectorAll('img.frame')].filter(i => i.naturalWidth > 0).length;"
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        shown = driver.execute_script(script)
        verdicts = [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".verdict")]
        if shown == len(CAMERAS) and "FAIL" in verdicts:
            return
        time.sleep(POLL_S)
    raise SystemExit("the live view never showed every camera with a FAIL")


def main(argv: list[str] | None = None) -> int:
    """Run the demo line, take the screenshot, stop."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("out", type=Path, help="PNG to write")
    args = parser.parse_args(argv)
    settings = DaemonDemoSettings(size_px=SIZE_PX)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        gallery = build_demo_gallery(work, settings)
        cameras = []
        for name, seed in CAMERAS.items():
            video = work / f"{name}.avi"
            write_demo_video(video, 40, settings.fps, settings.defect_every, settings.size_px, seed)
            cameras.append(CameraConfig(name=name, source=str(video), fps=settings.fps, loop=True))
        config = demo_config(Path(cameras[0].source), gallery, settings, bus_port=0).model_copy(
            update={"cameras": cameras, "liveview": LiveViewConfig(enabled=True, port=0)}
        )
        config.bus.bind = "tcp://127.0.0.1:*"
        context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        daemon = Daemon(config, context, CollectorRegistry(), SdNotifier({}), {})
        runner = threading.Thread(target=daemon.run, daemon=True)
        runner.start()
        try:
            if not daemon.ready_event.wait(WAIT_S):
                raise SystemExit("the daemon did not become ready")
            driver = chromium()
            try:
                driver.get(f"http://127.0.0.1:{daemon.output_ports['liveview']}/")
                wait_for(driver)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                driver.save_screenshot(str(args.out))
            finally:
                driver.quit()
        finally:
            daemon.request_stop("screenshot taken")
            runner.join(WAIT_S)
            context.term()
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
