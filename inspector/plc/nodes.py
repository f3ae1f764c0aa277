"""The OPC UA nodes of one camera: state, counters and result objects whose ResultId is written last."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from asyncua import ua
from asyncua.common.node import Node
from asyncua.common.structures104 import new_struct, new_struct_field

from inspector.plc.results import CameraBook, Result

V = ua.VariantType
RESULT_FIELDS: tuple[tuple[str, ua.VariantType, Any], ...] = (
    ("PartId", V.String, ""),
    ("Verdict", V.String, ""),
    ("AcceptPart", V.Boolean, False),
    ("Valid", V.Boolean, False),
    ("Score", V.Double, float("nan")),
    ("Threshold", V.Double, float("nan")),
    ("DefectAreaPx", V.Int64, 0),
    ("Seq", V.Int64, -1),
    ("BootId", V.String, ""),
    ("GalleryHash", V.String, ""),
    ("Product", V.String, ""),
    ("CapturedAt", V.DateTime, datetime.fromtimestamp(0, UTC)),
    ("PublishedAt", V.DateTime, datetime.fromtimestamp(0, UTC)),
    ("Error", V.String, ""),
)
"""Fields of a result object (name, type, value when there is no result). ``ResultId`` comes after them."""

RESULT_ID = "ResultId"
RECORD = "Result"  # the whole result as one structure: one data change per result, never a mix of two
RECORD_TYPE = "InspectionResultDataType"
COUNTERS: tuple[tuple[str, str | None], ...] = (
    ("Count", None),
    ("PassCount", "PASS"),
    ("ReviewCount", "REVIEW"),
    ("FailCount", "FAIL"),
    ("TimeoutCount", "TIMEOUT"),
    ("ErrorCount", "ERROR"),
)


def result_values(result: Result | None) -> dict[str, Any]:
    """The values of a result object's fields (the empty result for None: ResultId 0, not valid)."""
    if result is None:
        return {name: default for name, _, default in RESULT_FIELDS} | {RESULT_ID: 0}
    return {
        "PartId": result.part_id,
        "Verdict": result.verdict,
        "AcceptPart": result.accept,
        "Valid": result.valid,
        "Score": result.score,
        "Threshold": result.threshold,
        "DefectAreaPx": result.defect_area_px,
        "Seq": result.seq,
        "BootId": result.boot_id,
        "GalleryHash": result.gallery,
        "Product": result.product,
        "CapturedAt": datetime.fromtimestamp(result.captured_at, UTC),
        "PublishedAt": datetime.fromtimestamp(result.published_at, UTC),
        "Error": result.error,
        RESULT_ID: result.result_id,
    }


@dataclass(frozen=True)
class RecordType:
    """The structure data type of a whole result (``InspectionResultDataType``) and its Python class."""

    node: Node
    cls: type

    def value(self, values: dict[str, Any]) -> ua.Variant:
        """A result's values as one structure value."""
        return ua.Variant(self.cls(**values), V.ExtensionObject)


async def create_record_type(server: Any, idx: int) -> RecordType:
    """Register ``InspectionResultDataType`` (every result field, then ResultId) on the server."""
    fields = [new_struct_field(name, vtype) for name, vtype, _ in RESULT_FIELDS]
    node, _ = await new_struct(server, idx, RECORD_TYPE, [*fields, new_struct_field(RESULT_ID, V.UInt64)])
    classes = await server.load_data_type_definitions()
    # asyncua keeps one class per type name in ``ua``; a second server in a process with the same type id reuses it
    cls = classes.get(RECORD_TYPE) or getattr(ua, RECORD_TYPE)
    return RecordType(node, cls)


@dataclass
class ResultNodes:
    """A result object's variables: one per field, ``Result`` (all of them as one structure), ``ResultId``.

    A PLC watches ``Result`` (one consistent value per change) or ``ResultId``, which changes only after every
    other variable of the object was written.
    """

    variables: dict[str, Node]
    types: dict[str, ua.VariantType]
    record: Node
    record_type: RecordType

    async def write(self, values: dict[str, Any]) -> None:
        """Write every field, then the structure, then ResultId (a new ResultId means a complete result)."""
        for name, value in values.items():
            if name != RESULT_ID:
                await self.variables[name].write_value(ua.Variant(value, self.types[name]))
        await self.record.write_value(self.record_type.value(values))
        await self.variables[RESULT_ID].write_value(ua.Variant(values[RESULT_ID], V.UInt64))


async def build_result(parent: Node, idx: int, name: str, record_type: RecordType) -> ResultNodes:
    """A result object under ``parent`` with every field empty."""
    obj = await parent.add_object(idx, name)
    variables, types = {}, {}
    for field_name, vtype, default in RESULT_FIELDS:
        variables[field_name] = await obj.add_variable(idx, field_name, ua.Variant(default, vtype))
        types[field_name] = vtype
    empty = record_type.value(result_values(None))
    record = await obj.add_variable(idx, RECORD, empty, datatype=record_type.node.nodeid)
    variables[RESULT_ID] = await obj.add_variable(idx, RESULT_ID, ua.Variant(0, V.UInt64))
    return ResultNodes(variables, types, record, record_type)


@dataclass
class CameraNodes:
    """Every node of one camera object."""

    object: Node
    ready: Node
    state: Node
    camera_state: Node
    product: Node
    pending: Node
    counters: dict[str, Node]
    overwritten: Node
    last: ResultNodes
    oldest: ResultNodes

    async def write_counts(self, book: CameraBook) -> None:
        """The verdict counters and the overwrite count."""
        for name, verdict in COUNTERS:
            count = sum(book.counts.values()) if verdict is None else book.counts[verdict]
            await self.counters[name].write_value(ua.Variant(count, V.UInt64))
        await self.overwritten.write_value(ua.Variant(book.overwritten, V.UInt64))


async def build_camera(folder: Node, idx: int, name: str, record_type: RecordType) -> CameraNodes:
    """A camera object: Ready, State, CameraState, Product, PendingResults, counters, LastResult, OldestResult."""
    obj = await folder.add_object(idx, name)
    counters = {c: await obj.add_variable(idx, c, ua.Variant(0, V.UInt64)) for c, _ in COUNTERS}
    return CameraNodes(
        object=obj,
        ready=await obj.add_variable(idx, "Ready", False),
        state=await obj.add_variable(idx, "State", "NotReady: starting"),
        camera_state=await obj.add_variable(idx, "CameraState", "down"),
        product=await obj.add_variable(idx, "Product", ""),
        pending=await obj.add_variable(idx, "PendingResults", ua.Variant(0, V.UInt32)),
        counters=counters,
        overwritten=await obj.add_variable(idx, "OverwriteCount", ua.Variant(0, V.UInt64)),
        last=await build_result(obj, idx, "LastResult", record_type),
        oldest=await build_result(obj, idx, "OldestResult", record_type),
    )


def fill_event(event: Any, camera: str, result: Result) -> None:
    """The fields of a ResultReady event."""
    event.Camera, event.PartId, event.Verdict = camera, result.part_id, result.verdict
    event.ResultId = ua.Variant(result.result_id, V.UInt64)
    event.Seq = ua.Variant(result.seq, V.Int64)
    event.Product, event.AcceptPart = result.product, result.accept
    event.Message = ua.LocalizedText(f"{camera} part {result.part_id}: {result.verdict}")
    event.Time = datetime.now(UTC)
