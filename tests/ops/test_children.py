"""Tests for inspector.ops.children: /proc/<pid>/stat parsing and the child-process collector on real processes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from inspector.ops.children import ChildProcessCollector, parse_stat, read_usage
from tests.support import wait_until

BUSY_CHILD = (
    "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\ntime.sleep(600)\n"
)
TICKS = 100.0
PAGE = 4096


def stat_line(name: str, utime: int, stime: int, rss_pages: int) -> str:
    """A /proc/<pid>/stat line in the kernel's layout (proc(5)), with the fields this module reads set."""
    fields = ["S", *["0"] * 10, str(utime), str(stime), *["0"] * 8, str(rss_pages), "0"]
    return f"4242 ({name}) " + " ".join(fields) + "\n"


def test_parse_stat_adds_user_and_system_time_and_scales_pages() -> None:
    usage = parse_stat(stat_line("python3", 150, 50, 10), TICKS, PAGE)
    assert usage.cpu_s == pytest.approx(2.0)
    assert usage.resident_bytes == 10 * PAGE


def test_parse_stat_reads_past_a_command_name_with_spaces_and_parentheses() -> None:
    usage = parse_stat(stat_line("cam (line 1) )", 100, 0, 1), TICKS, PAGE)
    assert usage.cpu_s == pytest.approx(1.0)
    with pytest.raises(ValueError, match="not a /proc"):
        parse_stat("garbage", TICKS, PAGE)


def test_read_usage_of_this_process_and_of_a_pid_that_is_gone(tmp_path: Path) -> None:
    mine = read_usage(os.getpid())
    assert mine is not None and mine.cpu_s > 0 and mine.resident_bytes > 0
    assert read_usage(os.getpid(), proc=tmp_path) is None


@pytest.fixture
def busy_child() -> Iterator[subprocess.Popen[bytes]]:
    """A real child process that burns 0.3 s of CPU, then sleeps."""
    child = subprocess.Popen([sys.executable, "-c", BUSY_CHILD])
    yield child
    child.kill()
    child.wait()


def test_collector_exports_a_live_childs_cpu_and_memory_and_skips_dead_ones(
    busy_child: subprocess.Popen[bytes],
) -> None:
    registry = CollectorRegistry()
    collector = ChildProcessCollector(registry)
    assert (
        registry.get_sample_value("inspector_child_cpu_seconds_total", {"role": "camera", "camera": "a"})
        is None
    )
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    collector.watch(lambda: {("camera", "a"): busy_child.pid, ("camera", "b"): dead.pid})
    labels = {"role": "camera", "camera": "a"}

    def burnt() -> bool:
        value = registry.get_sample_value("inspector_child_cpu_seconds_total", labels)
        return value is not None and value >= 0.25

    wait_until(burnt, "the child's CPU time to show")
    memory = registry.get_sample_value("inspector_child_resident_memory_bytes", labels)
    assert memory is not None and memory > 1 << 20
    assert (
        registry.get_sample_value("inspector_child_cpu_seconds_total", {"role": "camera", "camera": "b"})
        is None
    )
