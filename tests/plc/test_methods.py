"""Method calls checked before their handler runs: object, argument count and types, handler failures."""

from __future__ import annotations

import asyncio
from typing import Any

from asyncua import ua

from inspector.plc.methods import Param, check_arguments, checked

OWNER = ua.NodeId(ua.Int32(5), ua.Int16(2))
PARAMS = (Param("PartId", ua.VariantType.String), Param("ResultId", ua.VariantType.UInt64))


def variant(value: Any, vtype: ua.VariantType) -> ua.Variant:
    return ua.Variant(value, vtype)


def names(codes: list[ua.StatusCode]) -> list[str]:
    return [c.name for c in codes]


def test_arguments_of_the_declared_types_pass() -> None:
    args = [variant("P-1", ua.VariantType.String), variant(3, ua.VariantType.UInt64)]
    assert check_arguments(PARAMS, args) is None


def test_a_wrong_type_or_an_array_is_a_type_mismatch_of_that_argument() -> None:
    wrong = check_arguments(PARAMS, [variant(7, ua.VariantType.Int32), variant(3, ua.VariantType.UInt64)])
    assert wrong is not None and wrong.StatusCode.name == "BadInvalidArgument"
    assert names(wrong.InputArgumentResults) == ["BadTypeMismatch", "Good"]
    array = check_arguments(
        PARAMS, [variant("P", ua.VariantType.String), variant([1, 2], ua.VariantType.UInt64)]
    )
    assert array is not None and names(array.InputArgumentResults) == ["Good", "BadTypeMismatch"]


def test_missing_and_extra_arguments_have_their_own_codes() -> None:
    missing = check_arguments(PARAMS, [variant("P", ua.VariantType.String)])
    assert missing is not None and missing.StatusCode.name == "BadArgumentsMissing"
    extra = [
        variant("P", ua.VariantType.String),
        variant(1, ua.VariantType.UInt64),
        variant(True, ua.VariantType.Boolean),
    ]
    too_many = check_arguments(PARAMS, extra)
    assert too_many is not None and too_many.StatusCode.name == "BadTooManyArguments"
    assert names(too_many.InputArgumentResults) == ["Good", "Good", "BadInvalidArgument"]


def test_the_handler_runs_only_for_its_own_object_and_a_failure_is_an_internal_error() -> None:
    seen: list[tuple[Any, ...]] = []

    async def handler(*values: Any) -> list[ua.Variant]:
        seen.append(values)
        if values[0] == "boom":
            raise RuntimeError("boom")
        return [variant(True, ua.VariantType.Boolean)]

    call = checked(OWNER, "Test", PARAMS, handler)
    good = [variant(None, ua.VariantType.String), variant(3, ua.VariantType.UInt64)]
    other = asyncio.run(call(ua.NodeId(ua.Int32(2253)), *good))
    assert other.StatusCode.name == "BadMethodInvalid" and seen == []
    done = asyncio.run(call(OWNER, *good))
    assert done.StatusCode.is_good() and done.OutputArguments[0].Value is True
    assert seen == [("", 3)], "a null String is not the empty string"
    failed = asyncio.run(
        call(OWNER, variant("boom", ua.VariantType.String), variant(1, ua.VariantType.UInt64))
    )
    assert failed.StatusCode.name == "BadInternalError" and failed.OutputArguments == []
