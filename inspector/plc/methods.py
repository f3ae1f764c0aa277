"""Method calls checked as OPC UA clients expect: the object, the argument count and each argument's type.

A call reaches its handler only with exactly the declared arguments, each of the declared scalar type, on the
object the method belongs to. Otherwise the call's status is the standard one and no line command is sent:
``BadMethodInvalid`` (another object), ``BadArgumentsMissing``, ``BadTooManyArguments``, or
``BadInvalidArgument`` with ``BadTypeMismatch`` in the input argument result of each wrong argument.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from asyncua import ua
from asyncua.ua.status_codes import StatusCodes

Handler = Callable[..., Awaitable[list[ua.Variant]]]
"""A method's body: the argument values (Python values, in declared order) in, the output variants out."""


@dataclass(frozen=True)
class Param:
    """One scalar argument of a method."""

    name: str
    vtype: ua.VariantType

    def argument(self) -> ua.Argument:
        """The ``Argument`` structure of the method's InputArguments / OutputArguments property."""
        arg = ua.Argument()
        arg.Name = self.name
        arg.DataType = ua.NodeId(ua.Int32(self.vtype.value))
        arg.ValueRank = -1
        return arg


def status(code: int) -> ua.StatusCode:
    """A status code value from one of asyncua's ``StatusCodes`` numbers."""
    return ua.StatusCode(ua.UInt32(code))


def _type_of(value: Any) -> tuple[ua.VariantType | None, bool]:
    """The variant type of one input and whether it is an array (None: not a variant)."""
    if not isinstance(value, ua.Variant):
        return None, False
    return value.VariantType, value.is_array or isinstance(value.Value, list)


def check_arguments(params: Sequence[Param], args: Sequence[Any]) -> ua.CallMethodResult | None:
    """None when ``args`` fit ``params``; else the result to answer with (no output arguments)."""
    result = ua.CallMethodResult()
    if len(args) < len(params):
        result.StatusCode = status(StatusCodes.BadArgumentsMissing)
        return result
    if len(args) > len(params):
        result.StatusCode = status(StatusCodes.BadTooManyArguments)
        result.InputArgumentResults = [status(StatusCodes.Good)] * len(params) + [
            status(StatusCodes.BadInvalidArgument)
        ] * (len(args) - len(params))
        return result
    results = []
    for param, arg in zip(params, args, strict=True):
        vtype, is_array = _type_of(arg)
        ok = vtype == param.vtype and not is_array
        results.append(status(StatusCodes.Good if ok else StatusCodes.BadTypeMismatch))
    if all(r.is_good() for r in results):
        return None
    result.StatusCode = status(StatusCodes.BadInvalidArgument)
    result.InputArgumentResults = results
    return result


def checked(owner: ua.NodeId, name: str, params: Sequence[Param], handler: Handler) -> Callable[..., Any]:
    """The callable asyncua runs for a method of ``owner``: checks, then ``handler`` with the values.

    A handler's exception becomes ``BadInternalError`` (logged), never a half-done answer.
    """
    log = structlog.stdlib.get_logger(__name__)

    async def call(parent: ua.NodeId, *args: Any) -> ua.CallMethodResult:
        if parent != owner:
            result = ua.CallMethodResult()
            result.StatusCode = status(StatusCodes.BadMethodInvalid)
            return result
        refused = check_arguments(params, args)
        if refused is not None:
            log.info("opcua_call_refused", method=name, status=refused.StatusCode.name)
            return refused
        result = ua.CallMethodResult()
        result.InputArgumentResults = [status(StatusCodes.Good)] * len(params)
        values = [_value(arg.Value, p.vtype) for arg, p in zip(args, params, strict=True)]
        try:
            result.OutputArguments = await handler(*values)
        except Exception:  # the client gets a status, the log the traceback
            log.exception("opcua_method_failed", method=name)
            result = ua.CallMethodResult()
            result.StatusCode = status(StatusCodes.BadInternalError)
        return result

    return call


def _value(value: Any, vtype: ua.VariantType) -> Any:
    """A null String is the empty string (OPC UA lets a client send either)."""
    if vtype == ua.VariantType.String and value is None:
        return ""
    return value
