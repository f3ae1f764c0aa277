"""The address space under ``Objects``: Inspector, its cameras, their methods, and the event notifier chain.

Events reach a subscription on the Server object, on Inspector or on a camera: Server -> Inspector -> each
camera are linked by HasNotifier references (every one an event notifier), and each ResultReady is raised at
all three, with the camera as its source (asyncua delivers an event only to the notifier it is raised at).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from asyncua import ua
from asyncua.common.node import Node
from asyncua.server.event_generator import EventGenerator
from asyncua.server.server import Server
from asyncua.ua.object_ids import ObjectIds

from inspector.plc.methods import Handler, Param, checked
from inspector.plc.nodes import CameraNodes, build_camera, create_record_type, fill_event
from inspector.plc.results import Result

NAMESPACE_URI = "urn:inspector:vision"
EVENT_TYPE = "ResultReadyEventType"
EVENT_FIELDS: tuple[tuple[str, ua.VariantType], ...] = (
    ("Camera", ua.VariantType.String), ("PartId", ua.VariantType.String), ("Verdict", ua.VariantType.String),
    ("ResultId", ua.VariantType.UInt64), ("Seq", ua.VariantType.Int64), ("Product", ua.VariantType.String),
    ("AcceptPart", ua.VariantType.Boolean),
)  # fmt: skip

S, B, I64, U64 = ua.VariantType.String, ua.VariantType.Boolean, ua.VariantType.Int64, ua.VariantType.UInt64
OK, ERROR = Param("Ok", B), Param("Error", S)
METHODS: dict[str, tuple[tuple[Param, ...], tuple[Param, ...]]] = {
    "Trigger": ((Param("PartId", S), Param("Product", S)), (Param("Seq", I64), ERROR)),
    "SelectProduct": ((Param("Product", S),), (OK, ERROR)),
    "Reload": ((), (OK, ERROR)),
    "AcknowledgeResult": ((Param("ResultId", U64),), (Param("Acknowledged", B),)),
}
"""Each camera's methods: inputs and outputs (PLC client blocks show the names)."""


@dataclass
class CameraSpace:
    """A camera's nodes and the event generators of ResultReady at each notifier (camera, Inspector, Server)."""

    nodes: CameraNodes
    events: list[EventGenerator] = field(default_factory=list)

    async def raise_result(self, camera: str, result: Result) -> None:
        """Raise ResultReady at every notifier of the chain."""
        for generator in self.events:
            fill_event(generator.event, camera, result)
            await generator.trigger()


@dataclass
class Space:
    """The nodes the server writes."""

    idx: int
    daemon_state: Node
    boot_id: Node
    cameras: dict[str, CameraSpace]


async def build_space(server: Server, cameras: Sequence[str]) -> Space:
    """Inspector (DaemonState, BootId, Cameras/<name>...) under Objects, the event type and the notifier chain."""
    idx = await server.register_namespace(NAMESPACE_URI)
    root = await server.nodes.objects.add_object(idx, "Inspector")
    daemon_state = await root.add_variable(idx, "DaemonState", "starting")
    boot_id = await root.add_variable(idx, "BootId", "")
    folder = await root.add_folder(idx, "Cameras")
    event_type = await server.create_custom_event_type(
        idx, EVENT_TYPE, ObjectIds.BaseEventType, list(EVENT_FIELDS)
    )
    record_type = await create_record_type(server, idx)
    server_object = server.nodes.server
    await server_object.add_reference(root.nodeid, ObjectIds.HasNotifier, forward=True, bidirectional=True)
    await root.set_event_notifier([ua.EventNotifier.SubscribeToEvents])
    spaces = {}
    for name in cameras:
        nodes = await build_camera(folder, idx, name, record_type)
        await root.add_reference(nodes.object.nodeid, ObjectIds.HasNotifier, forward=True, bidirectional=True)
        space = CameraSpace(nodes)
        for notifier in (nodes.object.nodeid, root.nodeid, server_object.nodeid):
            generator = await server.get_event_generator(event_type, notifier)
            generator.event.SourceNode = nodes.object.nodeid
            generator.event.SourceName = name
            space.events.append(generator)
        spaces[name] = space
    return Space(idx, daemon_state, boot_id, spaces)


async def add_methods(obj: Node, idx: int, handlers: dict[str, Handler]) -> None:
    """The methods of :data:`METHODS` on a camera object, each checked (``inspector.plc.methods``)."""
    for name, (inputs, outputs) in METHODS.items():
        call: Any = checked(obj.nodeid, name, inputs, handlers[name])
        await obj.add_method(idx, name, call, [p.argument() for p in inputs], [p.argument() for p in outputs])
