"""The daemon's OPC UA server seen by a second, independent stack (node-opcua), as a PLC or UaExpert uses it.

One daemon runs for the module: two external-trigger cameras, two products, Basic256Sha256 with a PKI folder,
users with passwords. Each test runs one scenario of ``tests/plc/node/plc.js`` against it and judges what the
client saw; together they cover the PLC's cycle and each of issue 29's eight findings.
"""

from __future__ import annotations

import base64
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zmq
from cryptography import x509

from inspector.bus.control import request
from inspector.cli.main import main
from inspector.core.passwords import hash_password
from inspector.demo.data import write_demo_video
from inspector.plc.certificates import application_uris
from tests.plc.conformance import DAY, Identity, make_ca, make_client, node_binary, run_node, write_crl
from tests.processes import DaemonProcess
from tests.support import REPO_ROOT, SyntheticGallery, build_synthetic_gallery, free_port, metric, scrape
from tests.toml_config import Table, tcp, video_camera, write_daemon_config

APP_URI = "urn:conformance-line-pc:inspector"
CAMERA, OTHER = "line", "aux"
CAMERA_FPS = 10.0
USER, PASSWORD = "plc", "line-7-password"
SLOW_USER = "engineer"  # a costly hash: a login check that runs on the server's loop stalls every session
FAST_ITERATIONS = 1000
SLOW_ITERATIONS = 4_000_000  # about a second of PBKDF2 on an idle core
READS_WHILE_CHECKING = 10  # reads another session completes while a costly login is checked, at least
TIMEOUT_MS = 120_000
TYPES = "String|Boolean|UInt32|UInt64|Int64|Double|DateTime"


@dataclass
class Plant:
    """The running daemon, the identities its clients hold, and what a scenario needs to connect."""

    daemon: DaemonProcess
    folder: Path
    pki: Path
    opcua_port: int
    metrics_port: int
    control: str
    ids: dict[str, Identity]

    def connect(self, identity: str = "plc", **extra: Any) -> dict[str, Any]:
        """Connection options: SignAndEncrypt with a client identity, the PLC's user, camera ``line``."""
        who = self.ids[identity]
        return {
            "url": f"opc.tcp://127.0.0.1:{self.opcua_port}/inspector/", "securityMode": "SignAndEncrypt",
            "securityPolicy": "Basic256Sha256", "certificate": who.pem, "privateKey": who.key,
            "applicationUri": who.uri, "user": USER, "password": PASSWORD, "camera": CAMERA,
            "timeoutMs": TIMEOUT_MS, **extra,
        }  # fmt: skip

    def run(self, scenario: str, **options: Any) -> dict[str, Any]:
        """Run one node-opcua scenario."""
        return run_node(self.folder / "node", {"scenario": scenario, **self.connect(), **options})


def identities(folder: Path, pki: Path) -> dict[str, Identity]:
    """The plant's CA (trusted), clients it signed (one revoked), a self-signed UaExpert, and strangers."""
    ca = make_ca(folder, "plant-ca")
    ids = {
        "plc": make_client(folder, "plc", ca),
        "uaexpert": make_client(folder, "uaexpert"),
        "stranger": make_client(folder, "stranger"),
        "expired": make_client(folder, "expired", ca, (-30 * DAY, -DAY)),
        "future": make_client(folder, "future", ca, (DAY, 30 * DAY)),
        "revoked": make_client(folder, "revoked", ca),
    }
    assert main(["opcua", "trust", str(folder / "plant-ca.der"), "--pki-dir", str(pki)]) == 0
    assert main(["opcua", "trust", str(ids["uaexpert"].der), "--pki-dir", str(pki)]) == 0
    write_crl(pki / "trusted" / "crl" / "plant-ca.crl", ca, [ids["revoked"].cert])
    return ids


@pytest.fixture(scope="module")
def plant(synthetic_gallery: SyntheticGallery, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plant]:
    node_binary()
    folder = tmp_path_factory.mktemp("conformance")
    pki = folder / "pki"
    other = build_synthetic_gallery(folder / "b", 8, seed=23)
    galleries = {"a": folder / "a.safetensors", "b": folder / "b.safetensors"}
    shutil.copyfile(synthetic_gallery.path, galleries["a"])
    shutil.copyfile(other.path, galleries["b"])
    video = folder / "line.avi"
    write_demo_video(video, 20, CAMERA_FPS, 4, 160, seed=9)
    users = folder / "users.toml"
    users.write_text(
        f'[users]\n{USER} = "{hash_password(PASSWORD, FAST_ITERATIONS)}"\n'
        f'{SLOW_USER} = "{hash_password(PASSWORD, SLOW_ITERATIONS)}"\n', encoding="utf-8",
    )  # fmt: skip
    cert, key = folder / "server.der", folder / "server.key.pem"
    made = ["opcua", "make-certificate", "--application-uri", APP_URI, "--certificate", str(cert)]
    assert main([*made, "--private-key", str(key), "--host", "localhost", "--host", "127.0.0.1"]) == 0
    ids = identities(folder, pki)
    ports = {name: free_port() for name in ("bus", "control", "metrics", "opcua")}
    opcua: Table = {
        "enabled": True, "port": ports["opcua"], "users_file": users, "certificate": cert, "private_key": key,
        "pki_dir": pki, "application_uri": APP_URI, "results_per_camera": 64,
        "login_failures_before_slowdown": 2, "login_slowdown_max_s": 1.0,
    }  # fmt: skip
    config = write_daemon_config(
        folder / "plant.toml", root={},
        products=[{"name": n, "gallery": g} for n, g in galleries.items()],
        cameras=[video_camera(CAMERA, video, CAMERA_FPS, trigger="external", product="a"),
                 video_camera(OTHER, video, CAMERA_FPS, trigger="external", product="b")],
        bus={"bind": tcp(ports["bus"])}, control={"enabled": True, "bind": tcp(ports["control"])},
        metrics={"port": ports["metrics"]}, opcua=opcua,
    )  # fmt: skip
    daemon = DaemonProcess(config)
    try:
        daemon.wait_event("daemon_ready")
        yield Plant(daemon, folder, pki, ports["opcua"], ports["metrics"], tcp(ports["control"]), ids)
        assert daemon.terminate() == 0
    finally:
        daemon.close()


def documented_types() -> tuple[dict[str, str], dict[str, str]]:
    """(camera variable -> type, result field -> type) as docs/plc.md lists them."""
    text = (REPO_ROOT / "docs" / "plc.md").read_text(encoding="utf-8")
    camera: dict[str, str] = {}
    tree = text[text.index("<camera name>") :]
    for names, vtype in re.findall(rf"── ([A-Z][\w, ]*?)\s{{2,}}({TYPES})\b", tree[: tree.index("```")]):
        camera |= dict.fromkeys((n.strip() for n in names.split(",")), vtype)
    fields = dict(re.findall(rf"^\| `(\w+)` \| ({TYPES}|`\w+DataType`) \|", text, flags=re.MULTILINE))
    return camera, {k: "ExtensionObject" if v.endswith("DataType`") else v for k, v in fields.items()}


def test_the_plc_cycle_runs_with_every_documented_type_and_result_ready_reaches_the_server_object(
    plant: Plant,
) -> None:
    """Finding 8: ResultReady reaches a Server-level subscription (HasNotifier Server -> Inspector -> camera)."""
    camera_types, field_types = documented_types()
    seen = plant.run("cycle", partId="NC-1", variables=sorted(camera_types), resultFields=sorted(field_types))
    assert {k: v["type"] for k, v in seen["variables"].items()} == camera_types
    assert {k: v["type"] for k, v in seen["result"].items()} == field_types
    assert all(v["status"] == "Good" for v in [*seen["variables"].values(), *seen["result"].values()])
    (seq, error) = [o["value"] for o in seen["trigger"]["outputs"]]
    assert seen["trigger"]["status"] == "Good" and seq >= 0 and error == ""
    (record,) = seen["changes"]
    assert record["Seq"] == seq and record["Valid"] is True and record["Product"] == "a"
    for where in ("camera", "server"):
        (event,) = seen["events"][where]
        assert event["SourceName"] == CAMERA and event["Camera"] == CAMERA, where
        assert (event["ResultId"], event["Seq"], event["Verdict"]) == (
            record["ResultId"],
            seq,
            record["Verdict"],
        )
    assert [a["outputs"][0]["value"] for a in seen["acks"]] == [True, False]


def test_endpoints_carry_the_configured_application_uri_and_the_certificate_has_it(plant: Plant) -> None:
    """Finding 1: the application URI is configurable and the certificate's SubjectAltName URI equals it."""
    seen = plant.run("endpoints")
    endpoints = seen["endpoints"]
    assert {e["securityMode"] for e in endpoints} == {"Sign", "SignAndEncrypt"}
    assert {e["applicationUri"] for e in endpoints} == {APP_URI}
    for e in endpoints:
        cert = x509.load_der_x509_certificate(base64.b64decode(e["certificate"]))
        assert application_uris(cert) == [APP_URI]
        assert "Anonymous" not in e["tokens"]


@pytest.mark.parametrize(
    ("identity", "status"),
    [
        ("plc", None),
        ("uaexpert", None),
        ("stranger", "BadCertificateUntrusted"),
        ("expired", "BadCertificateTimeInvalid"),
        ("future", "BadCertificateTimeInvalid"),
        ("revoked", "BadCertificateRevoked"),
    ],
)
def test_a_secure_channel_opens_only_with_a_trusted_valid_unrevoked_client_certificate(
    plant: Plant, identity: str, status: str | None
) -> None:
    """Finding 2: the PKI folder governs the secure channel, whatever the user."""
    seen = run_node(plant.folder / "node", {"scenario": "session", **plant.connect(identity)})
    if status is None:
        assert seen == {"ok": True, "state": "Ready"} or seen["ok"] is True, seen
    else:
        assert seen == {"ok": False, "status": status}


def test_a_rejected_certificate_lands_in_rejected_and_trusting_it_opens_the_next_channel(
    plant: Plant,
) -> None:
    """Finding 2: the engineer's way: the refused certificate in rejected/, ``inspector opcua trust``, connect."""
    who = make_client(plant.folder, "newcomer")
    newcomer = {"scenario": "session", **plant.connect("plc"), "certificate": who.pem, "privateKey": who.key}
    newcomer["applicationUri"] = who.uri
    assert run_node(plant.folder / "node", newcomer) == {"ok": False, "status": "BadCertificateUntrusted"}
    rejected = [p for p in (plant.pki / "rejected").iterdir() if p.read_bytes() == who.der.read_bytes()]
    assert len(rejected) == 1, "the refused certificate is not in rejected/"
    assert main(["opcua", "trust", str(rejected[0]), "--pki-dir", str(plant.pki)]) == 0
    assert not rejected[0].exists()
    assert run_node(plant.folder / "node", newcomer)["ok"] is True


def test_logins_are_checked_off_the_loop_with_the_same_work_for_unknown_users_counted_and_slowed(
    plant: Plant,
) -> None:
    """Finding 3: a costly check (an unknown user's too) never stalls another session; failures counted."""
    before = scrape(plant.metrics_port)
    attempts = [
        {"user": "nobody", "password": PASSWORD},
        {"user": SLOW_USER, "password": "wrong-password"},
        {"user": SLOW_USER, "password": "wrong-again"},
    ]
    seen = plant.run("logins", attempts=attempts)["attempts"]
    assert [a["status"] for a in seen] == ["BadUserAccessDenied"] * 3
    for attempt in seen:
        assert attempt["readsWhilePending"] >= READS_WHILE_CHECKING, (
            f"{attempt}: the other session stalled while the login was checked (or an unknown user cost nothing)"
        )
    after = scrape(plant.metrics_port)
    name = "inspector_opcua_login_failures_total"
    assert metric(after, name, reason="unknown_user") - metric(before, name, reason="unknown_user") == 1
    assert metric(after, name, reason="wrong_password") - metric(before, name, reason="wrong_password") == 2
    slowed = plant.daemon.events("opcua_login_slowed")
    assert slowed and slowed[-1]["address"] == "127.0.0.1", "the third failure in a row was not slowed"


def test_product_is_always_the_active_product_and_never_a_refused_name(plant: Plant) -> None:
    """Finding 4: at start-up, after SelectProduct returns, after a refused product, after the control socket."""
    s = {"type": "String"}
    cam = f"Inspector/Cameras/{CAMERA}"
    other = plant.run("readUntil", node=f"Inspector/Cameras/{OTHER}/Product", until="b", timeoutMs=0)
    assert other["seen"] == ["b"], "Product of an untouched camera is not its configured product"
    calls = [
        {"object": cam, "method": f"{cam}/SelectProduct", "args": [s | {"value": "b"}], "read": [f"{cam}/Product"]},
        {"object": cam, "method": f"{cam}/Trigger", "args": [s | {"value": "PR-1"}, s | {"value": "nope"}],
         "read": [f"{cam}/Product"]},
        {"object": cam, "method": f"{cam}/Trigger", "args": [s | {"value": "PR-2"}, s | {"value": ""}]},
    ]  # fmt: skip
    seen = plant.run("calls", calls=calls, watch=f"{cam}/Product")
    select, refused, _ = seen["calls"]
    assert [o["value"] for o in select["outputs"]] == [True, ""]
    assert select["read"] == {f"{cam}/Product": "b"}, (
        "SelectProduct returned before Product showed the change"
    )
    assert refused["read"] == {f"{cam}/Product": "b"}
    assert "nope" not in seen["watched"] and seen["watched"][-1] == "b", seen["watched"]
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        assert request(context, plant.control, {"cmd": "product", "camera": CAMERA, "product": "a"}, 60.0)[
            "ok"
        ]
    finally:
        context.term()
    shown = plant.run("readUntil", node=f"{cam}/Product", until="a")
    assert shown["seen"][-1] == "a", "a changeover by the control socket never showed in Product"


def test_a_trigger_with_an_unknown_product_returns_seq_minus_one_and_no_result_follows(plant: Plant) -> None:
    """Finding 5: one behaviour, as docs/plc.md says: Seq -1, the reason in Error, nothing triggered."""
    s = {"type": "String"}
    cam = f"Inspector/Cameras/{CAMERA}"
    calls = [
        {"object": cam, "method": f"{cam}/Trigger", "args": [s | {"value": "UP-1"}, s | {"value": "nope"}]},
        {"object": cam, "method": f"{cam}/Trigger", "args": [s | {"value": "UP-2"}, s | {"value": ""}]},
    ]
    seen = plant.run("calls", calls=calls, watch=f"{cam}/LastResult/Result", waitPartId="UP-2")
    unknown, known = seen["calls"]
    seq, error = [o["value"] for o in unknown["outputs"]]
    assert unknown["status"] == "Good" and seq == -1 and "nope" in error
    assert known["outputs"][0]["value"] >= 0
    parts = [r["PartId"] for r in seen["watched"] if r and r["ResultId"] > 0]
    assert "UP-2" in parts and "UP-1" not in parts, parts


def test_bad_method_arguments_get_the_standard_status_codes_and_trigger_nothing(plant: Plant) -> None:
    """Finding 6: wrong type, missing and extra arguments, answered before the daemon sees the call."""
    cam = f"Inspector/Cameras/{CAMERA}"
    trigger = {"object": cam, "method": f"{cam}/Trigger", "read": [f"{cam}/Count"]}
    s = {"type": "String", "value": "BA-1"}
    calls = [
        trigger | {"args": [{"type": "Int32", "value": 7}, s]},
        trigger | {"args": [s]},
        trigger | {"args": [s, s, s]},
        {"object": cam, "method": f"{cam}/AcknowledgeResult", "args": [{"type": "String", "value": "1"}]},
        {"object": cam, "method": f"{cam}/SelectProduct", "args": [{"type": "Boolean", "value": True}],
         "read": [f"{cam}/Product"]},
    ]  # fmt: skip
    before = scrape(plant.metrics_port)
    seen = plant.run("calls", calls=calls)["calls"]
    after = scrape(plant.metrics_port)
    assert [c["status"] for c in seen] == [
        "BadInvalidArgument", "BadArgumentsMissing", "BadTooManyArguments", "BadInvalidArgument",
        "BadInvalidArgument",
    ]  # fmt: skip
    assert seen[0]["inputArgumentResults"] == ["BadTypeMismatch", "Good"]
    assert seen[3]["inputArgumentResults"] == ["BadTypeMismatch"]
    assert all(c["outputs"] == [] for c in seen)
    for name in ("inspector_triggers_total", "inspector_triggers_rejected_total"):
        assert sum(v for k, v in after.items() if k[0] == name) == sum(
            v for k, v in before.items() if k[0] == name
        ), f"{name} moved: a refused call reached the daemon"


def test_a_camera_method_called_on_another_object_is_bad_method_invalid(plant: Plant) -> None:
    """Finding 7: the Server object, the Cameras folder or another camera cannot run this camera's Trigger."""
    cam = f"Inspector/Cameras/{CAMERA}"
    args = [{"type": "String", "value": "WO-1"}, {"type": "String", "value": ""}]
    objects = ["Server", "Inspector/Cameras", f"Inspector/Cameras/{OTHER}"]
    calls = [{"object": o, "method": f"{cam}/Trigger", "args": args} for o in objects]
    seen = plant.run("calls", calls=calls)["calls"]
    assert [c["status"] for c in seen] == ["BadMethodInvalid"] * 3
    assert all(c["outputs"] == [] for c in seen)
