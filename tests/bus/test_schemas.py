"""Tests for inspector.bus.schemas: the shipped JSON Schemas compile under a strict draft 2020-12 meta-schema,
are current, and state the same rules as the decoder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from inspector.bus.schemas import export_schemas
from inspector.bus.wire import SCHEMA_VERSION, decode_heartbeat, decode_verdict, encode_mask
from tests.bus.test_wire import SCORED_LATENCY, UNSCORED, UNSCORED_LATENCY, make_header, make_heartbeat
from tests.schemas import heartbeat_errors, strict_check, verdict_errors
from tests.support import REPO_ROOT

DOCS_DIR = REPO_ROOT / "docs"
SCHEMA_FILES = ["verdict.schema.json", "heartbeat.schema.json"]


@pytest.mark.parametrize("name", SCHEMA_FILES)
def test_the_shipped_schemas_compile_under_a_strict_2020_12_meta_schema(name: str) -> None:
    """Only standard keywords, anywhere: what ajv's default strict mode demands (x-... keywords failed it)."""
    schema = json.loads((DOCS_DIR / name).read_text(encoding="utf-8"))
    strict_check(schema)
    Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize(
    "schema",
    [
        {"x-topic": "heartbeat"},
        {"properties": {"a": {"type": "string", "x-unit": "ms"}}},
        {"$defs": {"A": {"anyOf": [{"type": "null", "nullable": True}]}}},
    ],
)
def test_the_strict_check_refuses_an_unknown_keyword_at_any_depth(schema: dict[str, Any]) -> None:
    with pytest.raises(SchemaError, match="Unevaluated properties"):
        strict_check({"$schema": "https://json-schema.org/draft/2020-12/schema", **schema})


def test_committed_schemas_equal_a_fresh_export(tmp_path: Path) -> None:
    written = export_schemas(tmp_path)
    assert [p.name for p in written] == SCHEMA_FILES
    for path in written:
        committed = DOCS_DIR / path.name
        assert committed.exists(), f"{committed} missing: run python -m inspector.bus.schemas docs"
        assert committed.read_text(encoding="utf-8") == path.read_text(encoding="utf-8"), (
            f"{committed} is stale: run python -m inspector.bus.schemas docs"
        )


def test_verdict_schema_lists_wire_field_names_and_verdict_values(tmp_path: Path) -> None:
    schema = json.loads(export_schemas(tmp_path)[0].read_text(encoding="utf-8"))
    expected = set(make_header().model_dump(by_alias=True))
    assert set(schema["properties"]) == expected
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]["verdict"]["enum"]) == {"PASS", "REVIEW", "FAIL", "TIMEOUT", "ERROR"}
    assert f"wire schema version {SCHEMA_VERSION}" in schema["$comment"]


@pytest.mark.parametrize("name", SCHEMA_FILES)
def test_every_field_of_the_shipped_schemas_is_required_and_schema_is_a_constant(name: str) -> None:
    schema = json.loads((DOCS_DIR / name).read_text(encoding="utf-8"))
    for where in [schema, *schema["$defs"].values()]:
        assert sorted(where["required"]) == sorted(where["properties"]), where["title"]
        assert where["additionalProperties"] is False
    assert schema["properties"]["schema"]["const"] == SCHEMA_VERSION


def _header_doc(**overrides: Any) -> dict[str, Any]:
    return {**json.loads(make_header().model_dump_json()), **overrides}


UNSCORED_DOC = {**UNSCORED, "latency_ms": UNSCORED_LATENCY}


@pytest.mark.parametrize(
    ("overrides", "valid"),
    [
        ({}, True),
        ({"verdict": "PASS", "score": 1.0}, True),
        ({"verdict": "REVIEW", "score": 1.8, "review_threshold": 1.5}, True),
        ({"verdict": "REVIEW", "pixel_threshold": None}, False),
        ({"verdict": "ERROR", **UNSCORED_DOC, "error": "x", "review_threshold": 1.5}, False),
        ({"verdict": "ERROR", **UNSCORED_DOC, "error": "scoring failed"}, True),
        ({"verdict": "TIMEOUT", **UNSCORED_DOC, "error": "late", "gallery": None, "product": None}, True),
        ({"verdict": "PASS", "score": None}, False),
        ({"verdict": "FAIL", "threshold": None}, False),
        ({"verdict": "FAIL", "pixel_threshold": None}, False),
        ({"verdict": "PASS", "defect_area_px": None}, False),
        ({"verdict": "PASS", "defect_count": None}, False),
        ({"verdict": "ERROR", **UNSCORED_DOC, "error": "x", "defect_count": 0}, False),
        (
            {
                "verdict": "ERROR",
                **UNSCORED_DOC,
                "error": "x",
                "defects": [{"area_px": 3, "peak": 2.0, "box": [0, 0, 1, 3]}],
            },
            False,
        ),
        ({"verdict": "FAIL", "error": "why"}, False),
        ({"verdict": "ERROR", **UNSCORED_DOC, "error": None}, False),
        ({"verdict": "TIMEOUT", **UNSCORED_DOC, "error": ""}, False),
        ({"verdict": "ERROR", **UNSCORED_DOC, "error": "x", "score": 1.0}, False),
        ({"verdict": "ERROR", **UNSCORED_DOC, "error": "x", "defect_area_px": 0}, False),
        ({"verdict": "ERROR", **UNSCORED_DOC, "error": "x", "latency_ms": SCORED_LATENCY}, False),
        ({"latency_ms": UNSCORED_LATENCY}, False),
        ({"latency_ms": {**SCORED_LATENCY, "gpu": 1.0}}, False),
        ({"gallery": "c5d5e7d40993"}, False),
        ({"seq": 2**63}, False),
        ({"schema": SCHEMA_VERSION + 1}, False),
        ({"mask": {"encoding": "png", "kind": "binary", "width": 0, "height": 0}}, False),
        ({"mask": {"encoding": "none", "kind": "binary", "width": 0, "height": 0}}, False),
        ({"mask": {"encoding": "png", "kind": "none", "width": 4, "height": 4}}, False),
        ({"mask": {"encoding": "none", "kind": "none", "width": 4, "height": 4}}, False),
        ({"mask": {"encoding": "png", "kind": "binary", "width": 4, "height": 4}}, True),
    ],
)
def test_the_verdict_schema_states_the_per_verdict_rules_the_decoder_enforces(
    overrides: dict[str, Any], valid: bool
) -> None:
    doc = _header_doc(**overrides)
    assert (verdict_errors(json.dumps(doc).encode()) == []) is valid
    mask = b"" if doc["mask"]["encoding"] == "none" else encode_mask(np.zeros((4, 4), np.uint8), "binary")[0]
    try:
        decode_verdict([b"verdict.cam1", json.dumps(doc).encode(), mask])
        decoded = True
    except ValueError:
        decoded = False
    assert decoded is valid  # the schema and the decoder agree on every case


@pytest.mark.parametrize(
    ("overrides", "valid"),
    [
        ({}, True),
        ({"state": "stopped", "worker": "stopped", "worker_alive": False}, True),
        ({"state": "failed", "worker": "down", "worker_alive": False}, True),
        ({"state": "starting", "worker": "starting", "worker_alive": False}, True),
        ({"worker": "stopping", "worker_alive": True}, True),
        ({"worker": "starting", "worker_alive": True}, False),
        ({"worker": "up", "worker_alive": False}, False),
        ({"cameras": {"cam1": {"state": "stopped", "up": False, "frames": 3, "last_seq": 2}}}, True),
        ({"cameras": {"cam1": {"state": "gone", "up": False, "frames": 3, "last_seq": 2}}}, False),
    ],
)
def test_the_heartbeat_schema_states_the_rules_the_decoder_enforces(
    overrides: dict[str, Any], valid: bool
) -> None:
    doc = {**json.loads(make_heartbeat().model_dump_json()), **overrides}
    assert (heartbeat_errors(json.dumps(doc).encode()) == []) is valid
    try:
        decode_heartbeat([b"heartbeat", json.dumps(doc).encode()])
        decoded = True
    except ValueError:
        decoded = False
    assert decoded is valid


def test_a_header_missing_any_field_breaks_the_schema() -> None:
    for name in _header_doc():
        doc = _header_doc()
        del doc[name]
        assert any("is a required property" in e for e in verdict_errors(json.dumps(doc).encode())), name
    beat = json.loads(make_heartbeat().model_dump_json())
    assert heartbeat_errors(json.dumps(beat).encode()) == []
    for name in list(beat):
        doc = {k: v for k, v in beat.items() if k != name}
        assert any("is a required property" in e for e in heartbeat_errors(json.dumps(doc).encode())), name
    del beat["cameras"]["cam1"]["last_seq"]
    assert heartbeat_errors(json.dumps(beat).encode()) != []
