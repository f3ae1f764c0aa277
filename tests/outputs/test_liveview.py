"""Tests for inspector.outputs.liveview over real HTTP: state, server-sent events, images, local files only."""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from inspector.bus.wire import CameraStatus, Heartbeat, rfc3339
from inspector.config.liveview import LiveViewConfig
from inspector.core.records import NO_IMAGE, Frame
from inspector.outputs.http import HttpServer
from inspector.outputs.liveview import STATIC_FILES, LiveView
from tests.support import HTTP_TIMEOUT_S, ScoredLine, bus_outcome, decode_image, http_get, stamp_published

EXTERNAL_URL = re.compile(r"(https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}")


@dataclass
class Served:
    """A live view on a free port with the clock it was built with."""

    view: LiveView
    url: str
    now: list[float]


def heartbeat(boot_id: str) -> Heartbeat:
    return Heartbeat(
        boot_id=boot_id, published_at=rfc3339(0.0), state="ready", uptime_s=1.0,
        cameras={"cam1": CameraStatus(state="up", up=True, frames=8), "cam2": CameraStatus(state="down", up=False, frames=0)},
        frames_published=8, worker_alive=True,
    )  # fmt: skip


@pytest.fixture
def served(scored_line: ScoredLine) -> Iterator[Served]:
    now = [1000.0]
    view = LiveView(
        ["cam1", "cam2"],
        LiveViewConfig(max_clients=1),
        lambda: heartbeat(scored_line.boot_id),
        lambda: now[0],
    )
    server = HttpServer("liveview", view.application(), "127.0.0.1", 0)
    port = server.start()
    yield Served(view, f"http://127.0.0.1:{port}", now)
    server.close()


def test_state_shows_the_latest_verdict_score_and_counts_per_camera(
    served: Served, scored_line: ScoredLine
) -> None:
    for outcome in scored_line.outcomes:
        served.view.deliver(outcome)
        served.now[0] += 0.5
    status, body, _ = http_get(served.url + "/state")
    assert status == 200
    state = json.loads(body)
    assert state["state"] == "ready"
    cam1, cam2 = state["cameras"]
    last = scored_line.outcomes[-1]
    assert (cam1["name"], cam1["up"], cam1["seq"], cam1["verdict"]) == ("cam1", True, last.seq, last.verdict)
    assert cam1["score"] == pytest.approx(last.score) and cam1["threshold"] == pytest.approx(last.threshold)
    assert cam1["product"] == last.frame.product is not None and cam1["part_id"] == last.frame.part_id
    verdicts = [o.verdict for o in scored_line.outcomes]
    assert (cam1["pass_last_hour"], cam1["fail_last_hour"]) == (
        verdicts.count("PASS"),
        verdicts.count("FAIL"),
    )
    assert cam1["fps"] == pytest.approx(len(verdicts) / 10.0)  # eight verdicts in the last 10 s
    assert (cam2["up"], cam2["verdict"]) == (False, None)
    served.now[0] += 3600.0
    later = json.loads(http_get(served.url + "/state")[1])["cameras"][0]
    assert (later["pass_last_hour"], later["fail_last_hour"], later["fps"]) == (0, 0, 0.0)


def test_the_image_of_the_seq_announced_is_the_frame_with_its_overlay(
    served: Served, scored_line: ScoredLine
) -> None:
    assert http_get(served.url + "/cameras/cam1/image.jpg")[0] == 404  # nothing yet
    for outcome in scored_line.outcomes:
        served.view.deliver(outcome)
    status, body, content_type = http_get(served.url + "/cameras/cam1/image.jpg?seq=7")
    assert (status, content_type) == (200, "image/jpeg")
    assert decode_image(body).shape == scored_line.outcomes[-1].frame.image.shape
    assert http_get(served.url + "/cameras/nope/image.jpg")[0] == 404


def test_events_stream_the_state_and_refuse_clients_beyond_the_limit(
    served: Served, scored_line: ScoredLine
) -> None:
    served.view.deliver(scored_line.outcomes[0])
    with urllib.request.urlopen(served.url + "/events", timeout=HTTP_TIMEOUT_S) as stream:
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        line = stream.readline().decode()
        assert line.startswith("data: ")
        assert json.loads(line[len("data: ") :])["cameras"][0]["seq"] == 0
        assert http_get(served.url + "/events")[0] == 503  # max_clients = 1
        stream.readline()  # the blank line that ends the event
        served.view.deliver(scored_line.outcomes[1])
        assert json.loads(stream.readline().decode()[len("data: ") :])["cameras"][0]["seq"] == 1


def test_the_page_and_its_files_are_served_locally_and_reference_no_other_site(served: Served) -> None:
    status, page, content_type = http_get(served.url + "/")
    assert status == 200 and content_type.startswith("text/html")
    for name, kind in STATIC_FILES.items():
        status, body, content_type = http_get(f"{served.url}/static/{name}")
        assert status == 200 and content_type.startswith(kind), name
        assert not EXTERNAL_URL.search(body.decode("utf-8")), f"{name} loads something from another site"
    assert b"/static/liveview.js" in page and b"/static/liveview.css" in page
    assert http_get(served.url + "/static/secret.py")[0] == 404


def test_a_verdict_without_a_frame_has_no_picture_and_a_bad_seq_is_refused(
    served: Served, scored_line: ScoredLine
) -> None:
    for outcome in scored_line.outcomes:
        served.view.deliver(outcome)
    fault = Frame("cam1", 60, 1.0, 1.0, NO_IMAGE, "P-60", "a", "no frame")
    served.view.deliver(
        stamp_published(bus_outcome(fault, "ERROR", error="no frame"), scored_line.boot_id, 2.0)
    )
    state = json.loads(http_get(served.url + "/state")[1])
    cam1 = next(c for c in state["cameras"] if c["name"] == "cam1")
    assert (cam1["verdict"], cam1["seq"], cam1["image"]) == (
        "ERROR",
        60,
        None,
    )  # the page keeps the last picture
    assert http_get(served.url + "/cameras/cam1/image.jpg?seq=60")[0] == 404
    assert http_get(served.url + "/cameras/cam1/image.jpg")[0] == 200  # the newest with a frame
    for bad in ("abc", "-1", "1.5", "%C2%B2"):
        assert http_get(served.url + f"/cameras/cam1/image.jpg?seq={bad}")[0] == 400, bad
