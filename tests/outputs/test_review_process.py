"""The review and re-teach loop against the real daemon, a real SQLite parts database and headless Chromium:
an operator judges a FAIL as a false reject, an engineer exports and re-teaches, and after a reload the same
image PASSes on the bus; refusals (roles, CSRF, passwords, double judgments) and an edited audit row."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from inspector.core.passwords import hash_password
from inspector.demo.data import write_good_part_images
from inspector.demo.parts import render_part
from inspector.model.gallery import read_gallery_hash
from tests.browser import BROWSER_WAIT_S, browser
from tests.processes import DaemonProcess, Subscriber
from tests.support import (
    FRAME_SIDE_PX,
    VIDEO_FPS,
    SyntheticGallery,
    free_port,
    metric,
    run_cli,
    scrape,
    wait_until,
)
from tests.toml_config import BATCHING, tcp, write_daemon_config

CAMERA = "station"
PASSWORDS = {"olga": "operator-pass-1", "erik": "engineer-pass-1"}
ROLES = {"olga": "operator", "erik": "engineer"}
FAST_ITERATIONS = 1000  # the test's users: the format of a real users file, a fraction of its work
STICKER, DEFECT = "a_sticker", "b_defect"


def _images(folder: Path) -> None:
    """Two frames of the gallery's size: a good part with a bright label stuck on it (the model flags it, a
    person would pass it) and a part with a real defect."""
    folder.mkdir()
    good = write_good_part_images(folder / "tmp", 1, VIDEO_FPS, FRAME_SIDE_PX, seed=77)[0]
    image = cv2.imread(str(good))
    assert image is not None
    sticker = image.copy()
    cv2.rectangle(sticker, (60, 60), (66, 66), (250, 250, 250), -1)
    cv2.imwrite(str(folder / f"{STICKER}.png"), sticker)
    defect = render_part(np.random.default_rng(5), FRAME_SIDE_PX, "stain")[0]
    cv2.imwrite(str(folder / f"{DEFECT}.png"), defect)
    shutil.rmtree(folder / "tmp")


def _users(path: Path) -> Path:
    users = "".join(f'{u} = "{hash_password(p, FAST_ITERATIONS)}"\n' for u, p in PASSWORDS.items())
    roles = "".join(f'{u} = "{r}"\n' for u, r in ROLES.items())
    path.write_text(f"[users]\n{users}\n[roles]\n{roles}")
    path.chmod(0o600)
    return path


def _login(driver: WebDriver, port: int, user: str, password: str) -> None:
    driver.get(f"http://127.0.0.1:{port}/review")
    wait_until(lambda: driver.find_element(By.ID, "login").is_displayed(), "the login form", BROWSER_WAIT_S)
    driver.find_element(By.ID, "user").send_keys(user)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.ID, "login-button").click()


def _fetch(
    driver: WebDriver, path: str, body: dict[str, Any], csrf: bool = True
) -> tuple[int, dict[str, Any]]:
    """POST from the page's own origin (its cookie), with or without the session's CSRF token."""
    script = """
        const [path, body, csrf, done] = arguments;
        const s = await (await fetch('/review/api/session')).json();
        const headers = {'Content-Type': 'application/json'};
        if (csrf) headers['X-CSRF-Token'] = s.csrf;
        const r = await fetch(path, {method: 'POST', headers, body: JSON.stringify(body)});
        done([r.status, await r.json()]);"""
    status, doc = driver.execute_async_script(script, path, body, csrf)
    return int(status), doc


def _judge_until(driver: WebDriver, wanted: dict[str, str]) -> None:
    """Judge the queue's current part with its key while it is one of ``wanted`` (part id -> key)."""
    done: set[str] = set()

    def step() -> bool:
        part = driver.find_element(By.ID, "part-id").text
        if part in wanted and part not in done and driver.find_element(By.ID, "part").is_displayed():
            if wanted[part] == "d":
                driver.find_element(By.ID, "defect-type").send_keys("stain")
            driver.find_element(By.TAG_NAME, "body").send_keys(wanted[part])
            done.add(part)
        return done == set(wanted)

    wait_until(step, "the operator's judgments", BROWSER_WAIT_S)


def _latest(bus: Subscriber, part_id: str, gallery: str) -> str | None:
    """The verdict of the latest frame of ``part_id`` that ``gallery`` scored (None before one)."""
    found = [v.verdict for v in bus.got.of(CAMERA) if v.part_id == part_id and v.gallery == gallery]
    return found[-1] if found else None


def test_judge_export_reteach_reload_and_the_false_reject_passes_with_every_refusal_on_the_way(
    synthetic_gallery: SyntheticGallery, tmp_path: Path
) -> None:
    images = tmp_path / "frames"
    _images(images)
    gallery = Path(shutil.copyfile(synthetic_gallery.path, tmp_path / "station.safetensors"))
    ports = {name: free_port() for name in ("bus", "metrics", "liveview", "control")}
    config = write_daemon_config(
        tmp_path / "review.toml", root={},
        cameras=[{"name": CAMERA, "source": images, "kind": "folder", "loop": True, "fps": 2.0}],
        worker={"gallery": gallery}, batching=BATCHING, bus={"bind": tcp(ports["bus"])},
        metrics={"port": ports["metrics"]}, control={"enabled": True, "bind": tcp(ports["control"])},
        archive={"directory": tmp_path / "archive"},
        parts={"url": f"sqlite:///{tmp_path / 'parts.db'}", "flush_interval_ms": 100.0},
        liveview={"enabled": True, "port": ports["liveview"]},
        review={"enabled": True, "users_file": _users(tmp_path / "users.toml"), "export_dir": tmp_path / "exports"},
    )  # fmt: skip
    bus = Subscriber(tcp(ports["bus"]))
    daemon = DaemonProcess(config)
    driver = browser()
    old = read_gallery_hash(gallery)
    try:
        daemon.wait_event("daemon_ready")
        wait_until(lambda: _latest(bus, STICKER, old) == "FAIL",
                   "the sticker part FAILs with the shipped gallery")  # fmt: skip
        # a wrong password is refused and counted; an operator judges the false reject and the defect
        _login(driver, ports["liveview"], "olga", "not-her-password")
        wait_until(lambda: "wrong user or password" in driver.find_element(By.ID, "message").text, "refused")
        assert (
            metric(scrape(ports["metrics"]), "inspector_review_login_failures_total", reason="wrong_password")
            == 1
        )
        _login(driver, ports["liveview"], "olga", PASSWORDS["olga"])
        wait_until(lambda: driver.find_element(By.ID, "who").text == "olga (operator)", "olga logged in")
        _judge_until(driver, {STICKER: "g", DEFECT: "d"})
        assert _fetch(driver, "/review/api/export", {})[0] == 403  # an operator cannot export (re-teach)
        assert _fetch(driver, "/review/api/judge", {"id": 1, "judgment": "good"}, csrf=False)[0] == 403
        assert _fetch(driver, "/review/api/judge", {"id": 987654, "judgment": "good"})[0] == 404
        records = run_cli("parts", "query", "--config", config, "--part-id", STICKER, "--json").stdout
        (judged,) = [doc for line in records.splitlines() if (doc := json.loads(line)).get("judgment")]
        assert judged["judgment"]["judgment"] == "good" and judged["judgment"]["judged_by"] == "olga"
        status, doc = _fetch(driver, "/review/api/judge", {"id": judged["id"], "judgment": "defect"})
        assert status == 409 and "already judged" in doc["error"], doc
        driver.find_element(By.ID, "logout").click()
        # the engineer exports from the page, re-teaches with the CLI, reloads; the same image now PASSes
        _login(driver, ports["liveview"], "erik", PASSWORDS["erik"])
        wait_until(
            lambda: driver.find_element(By.ID, "export").is_displayed(), "the engineer's export button"
        )
        driver.find_element(By.ID, "export").click()
        wait_until(lambda: "exported to" in driver.find_element(By.ID, "message").text, "the export")
        out = Path(driver.find_element(By.ID, "message").text.removeprefix("exported to "))
        reteach = run_cli("gallery", "add", "--gallery", gallery, "--from-review", out / "station",
                          "--config", config, "--user", "erik")  # fmt: skip
        assert reteach.returncode == 0, reteach.stdout + reteach.stderr
        assert "1 fixed" in reteach.stdout and "caught (FAIL or REVIEW) before 1, after 1" in reteach.stdout
        new = read_gallery_hash(gallery)
        assert run_cli("ctl", "--connect", tcp(ports["control"]), "reload").returncode == 0
        wait_until(
            lambda: _latest(bus, STICKER, new) is not None, "the sticker part scored by the new gallery"
        )
        assert _latest(bus, STICKER, new) == "PASS"
        wait_until(lambda: _latest(bus, DEFECT, new) is not None, "the defect scored by the new gallery")
        assert _latest(bus, DEFECT, new) == "FAIL"
        assert daemon.terminate() == 0
    finally:
        driver.quit()
        bus.close()
        daemon.close()
    verify = run_cli("audit", "verify", "--config", config)
    assert verify.returncode == 0 and "audit trail intact" in verify.stdout, verify.stdout
    audit = subprocess.run(["sqlite3", str(tmp_path / "parts.db"), "SELECT action FROM audit ORDER BY seq"],
                           capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    for action in (
        "login_failed",
        "login",
        "judgment",
        "logout",
        "review_export",
        "gallery_replaced",
        "reload",
    ):
        assert action in audit, audit
    subprocess.run(["sqlite3", str(tmp_path / "parts.db"), "UPDATE audit SET user_name = 'mallory' WHERE seq = 3"],
                   check=True)  # fmt: skip
    broken = run_cli("audit", "verify", "--config", config)
    assert broken.returncode == 1 and "BROKEN at row 3: row 3 was edited" in broken.stdout
