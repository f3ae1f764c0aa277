"""CPU time and resident memory of the daemon's child processes (the camera processes), read from /proc."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

PROC = Path("/proc")
STAT_UTIME, STAT_STIME, STAT_RSS = 11, 12, 21  # indices after the ")" that closes the command name
CHILD_LABELS = ("role", "camera")

ChildPids = Callable[[], Mapping[tuple[str, str], int]]
"""(role, camera) -> pid of every child running now (role "camera" for the capture processes)."""


@dataclass(frozen=True)
class ProcessUsage:
    """What one process has used: CPU seconds (user + system) and resident memory in bytes."""

    cpu_s: float
    resident_bytes: int


def parse_stat(text: str, ticks_per_s: float, page_bytes: int) -> ProcessUsage:
    """The usage in one ``/proc/<pid>/stat`` line (see proc(5); the command name may hold spaces).

    Raises:
        ValueError: the text is not a stat line.
    """
    closing = text.rfind(")")
    fields = text[closing + 1 :].split()
    if closing < 0 or len(fields) <= STAT_RSS:
        raise ValueError(f"not a /proc/<pid>/stat line: {text[:80]!r}")
    ticks = int(fields[STAT_UTIME]) + int(fields[STAT_STIME])
    return ProcessUsage(cpu_s=ticks / ticks_per_s, resident_bytes=int(fields[STAT_RSS]) * page_bytes)


def read_usage(pid: int, proc: Path = PROC) -> ProcessUsage | None:
    """A process's usage now, or None when it is gone (or /proc is not there)."""
    try:
        text = (proc / str(pid) / "stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    return parse_stat(text, float(os.sysconf("SC_CLK_TCK")), os.sysconf("SC_PAGE_SIZE"))


class ChildProcessCollector(Collector):
    """Exports ``inspector_child_cpu_seconds_total`` and ``inspector_child_resident_memory_bytes``.

    The main process's own usage is ``process_*`` (prometheus-client's ProcessCollector); this adds the
    children, which that collector cannot see. A child restarted under a new pid starts its counter again
    from its own total, which ``rate()`` treats as a counter reset.
    """

    def __init__(self, registry: CollectorRegistry | None, proc: Path = PROC) -> None:
        """Register on ``registry``; no child is watched until :meth:`watch`."""
        self._proc = proc
        self._lock = threading.Lock()
        self._pids: ChildPids = dict
        if registry is not None:
            registry.register(self)

    def watch(self, pids: ChildPids) -> None:
        """Report the children ``pids()`` names at each scrape."""
        with self._lock:
            self._pids = pids

    def collect(self) -> Iterator[Metric]:
        """One sample per live child in each family (families are always present)."""
        cpu = CounterMetricFamily(
            "inspector_child_cpu_seconds",
            "User and system CPU time of a child process of the daemon (camera capture), seconds.",
            labels=CHILD_LABELS,
        )
        memory = GaugeMetricFamily(
            "inspector_child_resident_memory_bytes",
            "Resident memory of a child process of the daemon (camera capture), bytes.",
            labels=CHILD_LABELS,
        )
        with self._lock:
            pids = self._pids
        for (role, camera), pid in sorted(pids().items()):
            usage = read_usage(pid, self._proc)
            if usage is not None:
                cpu.add_metric([role, camera], usage.cpu_s)
                memory.add_metric([role, camera], usage.resident_bytes)
        yield cpu
        yield memory
