"""The shipped JSON Schemas (docs/*.schema.json) as validators: tests check every header they receive."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, best_match

from inspector.bus.wire import HEARTBEAT_SCHEMA_FILE, U8_AT_PIXEL_THRESHOLD, VERDICT_SCHEMA_FILE

DOCS_DIR = Path(__file__).resolve().parents[1] / "docs"
DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
STRICT_META_SCHEMA = {
    # The standard draft 2020-12 meta-schema, extended the way the specification extends meta-schemas: its
    # subschemas refer back through $dynamicRef "#meta", so they land here too, and unevaluatedProperties
    # false then refuses any keyword no vocabulary defines, at every depth (what ajv's strict mode refuses).
    "$schema": DRAFT_2020_12,
    "$id": "urn:inspector:tests:strict-draft-2020-12",
    "$dynamicAnchor": "meta",
    "$ref": DRAFT_2020_12,
    "unevaluatedProperties": False,
}


def strict_check(schema: Any) -> None:
    """Check a schema against draft 2020-12 with no unknown keyword anywhere.

    Raises:
        SchemaError: the schema is invalid or uses a keyword outside the standard vocabularies.
    """
    error = best_match(Draft202012Validator(STRICT_META_SCHEMA).iter_errors(schema))
    if error is not None:
        raise SchemaError.create_from(error)


@cache
def validator(name: str) -> Any:
    """A Draft 2020-12 validator of one shipped schema file (the schema itself checked strictly first)."""
    schema = json.loads((DOCS_DIR / name).read_text(encoding="utf-8"))
    strict_check(schema)
    return Draft202012Validator(schema)


def schema_errors(name: str, document: Any) -> list[str]:
    """Every way a decoded JSON document breaks a schema, each naming the field path."""
    return [
        f"{name}: {'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in validator(name).iter_errors(document)
    ]


def verdict_errors(header: bytes) -> list[str]:
    """A raw verdict header against verdict.schema.json."""
    return schema_errors(VERDICT_SCHEMA_FILE, json.loads(header))


def heartbeat_errors(header: bytes) -> list[str]:
    """A raw heartbeat header against heartbeat.schema.json."""
    return schema_errors(HEARTBEAT_SCHEMA_FILE, json.loads(header))


def mask_rule_errors(header: bytes, mask: np.ndarray | None) -> list[str]:
    """The guide's mask rule: an anomaly_map_u8 mask has ``defect_area_px`` pixels >= 128, a binary one 255s."""
    doc = json.loads(header)
    if mask is None or doc["defect_area_px"] is None:
        return []
    counted = int(np.count_nonzero(mask >= U8_AT_PIXEL_THRESHOLD))
    if counted != doc["defect_area_px"]:
        where = f"{doc['camera']} seq {doc['seq']}"
        return [f"{where}: {counted} mask pixels >= 128 but defect_area_px {doc['defect_area_px']}"]
    return []
