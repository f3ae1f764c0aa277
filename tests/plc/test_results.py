"""The PLC's result book: results held until acknowledged, counted overwrites, readiness from heartbeats."""

from __future__ import annotations

from inspector.plc.results import NOT_READY_SILENT, READY, ResultBook
from tests.plc.test_server import CAMERA, heartbeat, verdict

BUDGET_S = 3.0


def book(capacity: int = 3) -> tuple[ResultBook, list[float]]:
    now = [100.0]
    return ResultBook([CAMERA], capacity, BUDGET_S, lambda: now[0]), now


def test_result_ids_count_from_one_and_an_overflow_overwrites_the_oldest_counted() -> None:
    results, _ = book(capacity=2)
    ids = [results.add(verdict(seq, f"P-{seq}")) for seq in range(4)]
    assert [r.result_id for r in ids if r is not None] == [1, 2, 3, 4]
    snap = results.snapshot(CAMERA)
    assert [r.part_id for r in snap.pending] == ["P-2", "P-3"] and snap.overwritten == 2
    assert snap.last is not None and snap.last.part_id == "P-3"


def test_acknowledging_forgets_one_result_once() -> None:
    results, _ = book()
    for seq in range(3):
        results.add(verdict(seq, f"P-{seq}"))
    assert results.acknowledge(CAMERA, 2) is True
    assert results.acknowledge(CAMERA, 2) is False
    assert [r.result_id for r in results.snapshot(CAMERA).pending] == [1, 3]


def test_only_a_valid_pass_accepts_a_part() -> None:
    results, _ = book()
    passed, failed, error = (
        results.add(verdict(s, f"P-{s}", v)) for s, v in enumerate(("PASS", "FAIL", "ERROR"))
    )
    assert passed is not None and passed.accept
    assert failed is not None and not failed.accept
    assert error is not None and not error.accept and error.error == "no frame"


def test_readiness_needs_a_recent_heartbeat_and_a_silence_invalidates_held_results() -> None:
    results, now = book()
    assert results.state(CAMERA) == (False, NOT_READY_SILENT), "ready before any heartbeat"
    results.heartbeat(heartbeat())
    results.add(verdict(0, "P-0"))
    assert results.state(CAMERA) == (True, READY)
    now[0] += BUDGET_S * 0.9
    assert not results.check_silence() and results.state(CAMERA)[0]
    now[0] += BUDGET_S * 0.2
    assert results.check_silence()
    assert results.state(CAMERA) == (False, NOT_READY_SILENT)
    snap = results.snapshot(CAMERA)
    assert snap.last is not None and not snap.last.accept and not snap.pending[0].accept
    results.heartbeat(heartbeat())
    assert results.state(CAMERA)[0]
    assert not results.snapshot(CAMERA).pending[0].accept, "a heartbeat after a silence revalidated a result"


def test_a_camera_the_book_does_not_know_gets_no_result() -> None:
    results, _ = book()
    assert results.add(verdict(0, "X", camera="other")) is None
