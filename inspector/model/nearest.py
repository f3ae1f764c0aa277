"""Fused exact nearest-row search on CPU: the C++ library built at install time, its instruction set chosen at run time."""

from __future__ import annotations

import ctypes
import functools
import importlib.machinery
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from inspector.core.errors import InspectorError

LIBRARY_STEM = "_nearest"  # inspector/model/_nearest.cpp, built by pip install as _nearest<suffix>.so
ABI_VERSION = 1  # the C interface this module speaks (inspector_nearest_abi)
ISA_NAMES = ("scalar", "avx2", "avx512")  # the library's instruction-set codes 0, 1, 2
AUTO_ISA = -1
MAX_GALLERY_ROWS = (1 << 31) - 1  # row indices are int32 in the vector lanes
ERRORS = {-1: "bad argument", -2: "instruction set not available on this CPU", -3: "out of memory"}

_POINTER = ctypes.c_void_p
_I64 = ctypes.c_int64


class NearestError(InspectorError):
    """The fused search cannot run: no library, an unusable tensor, or a failed call."""


@dataclass(frozen=True)
class Segment:
    """Gallery rows the search walks, as one strided block.

    Attributes:
        rows: [n, C] float32 rows on the CPU; each row contiguous, rows any constant stride apart (a view
            of a wider tensor, e.g. a bank's rows with their norm appended, is fine).
        sq_norms: [n] float32 squared norms of ``rows`` (any constant stride).
    """

    rows: torch.Tensor
    sq_norms: torch.Tensor


class NearestLibrary:
    """The loaded library: one call searches query rows against gallery segments, the GIL released."""

    def __init__(self, path: Path) -> None:
        """Load the library at ``path``.

        Raises:
            NearestError: it does not load, or speaks another version of the C interface.
        """
        try:
            cdll = ctypes.CDLL(str(path))
            abi = int(cdll.inspector_nearest_abi())
        except (OSError, AttributeError) as exc:
            raise NearestError(f"fused kernel library {path}: does not load ({exc})") from None
        if abi != ABI_VERSION:
            raise NearestError(
                f"fused kernel library {path}: interface version {abi}, expected {ABI_VERSION}"
            )
        self.path = path
        self._search = cdll.inspector_nearest
        self._search.restype = ctypes.c_int
        self._search.argtypes = [
            _POINTER, _I64, _I64, _I64, _I64, _POINTER, _POINTER, _POINTER, _I64, _I64,
            ctypes.c_int, ctypes.c_int, _POINTER, _POINTER,
        ]  # fmt: skip
        self.best_isa = ISA_NAMES[int(cdll.inspector_nearest_best_isa())]

    def search(
        self, queries: torch.Tensor, segments: Sequence[Segment], threads: int = 1, isa: str = "auto"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """For each query row, the nearest row of the segments: exact L2 distance and global row index.

        The candidate of each gallery row, |g|^2 - 2 q.g, is compared with the query's running minimum
        inside the distance loop; the winner's distance is then recomputed by direct difference (double
        accumulation), so it is exact float32. Rows are numbered through the segments in order; of equal
        candidates the first row wins. Centre queries and rows alike (e.g. on the gallery's mean) when
        their mean is far from zero: it limits the cancellation in choosing the winner.

        Args:
            queries: [M, C] float32 CPU rows (each row contiguous).
            segments: the gallery, in order; every segment's rows have C columns and the same strides.
            threads: query rows are split between this many threads.
            isa: "auto" (the widest this CPU runs) or one of ISA_NAMES.

        Returns:
            ([M] float32 distances, [M] int64 row indices).

        Raises:
            NearestError: a tensor of the wrong dtype, device or layout, or an unavailable isa.
        """
        m, c = _check_rows(queries, "queries")
        if not segments:
            raise NearestError("no gallery rows to search")
        first = segments[0]
        for seg in segments:
            if _check_rows(seg.rows, "gallery rows")[1] != c:
                raise NearestError(f"gallery rows have {seg.rows.shape[1]} columns, queries {c}")
            if seg.rows.stride() != first.rows.stride() or seg.sq_norms.stride() != first.sq_norms.stride():
                raise NearestError("every gallery segment must have the same strides")
            if seg.sq_norms.dtype != torch.float32 or seg.sq_norms.shape != seg.rows.shape[:1]:
                raise NearestError("each segment needs one float32 squared norm per row")
        if sum(s.rows.shape[0] for s in segments) > MAX_GALLERY_ROWS:
            raise NearestError(f"more than {MAX_GALLERY_ROWS} gallery rows")
        code = AUTO_ISA if isa == "auto" else _isa_code(isa)
        n = len(segments)
        rows = (_POINTER * n)(*(s.rows.data_ptr() for s in segments))
        norms = (_POINTER * n)(*(s.sq_norms.data_ptr() for s in segments))
        lengths = (_I64 * n)(*(s.rows.shape[0] for s in segments))
        dist = torch.empty(m, dtype=torch.float32)
        index = torch.empty(m, dtype=torch.int64)
        norm_stride = first.sq_norms.stride(0) if first.sq_norms.dim() == 1 else 1
        status = self._search(
            queries.data_ptr(), m, c, queries.stride(0), n, rows, norms, lengths,
            first.rows.stride(0), norm_stride, code, max(1, threads), dist.data_ptr(), index.data_ptr(),
        )  # fmt: skip
        if status != 0:
            raise NearestError(f"fused kernel: {ERRORS.get(status, f'error {status}')} (isa {isa})")
        return dist, index


def _isa_code(isa: str) -> int:
    if isa not in ISA_NAMES:
        raise NearestError(f"unknown instruction set {isa!r}: one of auto, {', '.join(ISA_NAMES)}")
    return ISA_NAMES.index(isa)


def _check_rows(t: torch.Tensor, what: str) -> tuple[int, int]:
    if t.dtype != torch.float32 or t.device.type != "cpu" or t.dim() != 2:
        raise NearestError(
            f"{what}: need a 2-D float32 CPU tensor, got {t.dtype} {list(t.shape)} on {t.device}"
        )
    if t.shape[1] < 1 or (t.shape[1] > 1 and t.stride(1) != 1) or t.stride(0) < t.shape[1]:
        raise NearestError(f"{what}: each row must be contiguous (strides {t.stride()})")
    return t.shape[0], t.shape[1]


def library_path() -> Path | None:
    """The built library beside this module (any of this Python's extension suffixes), or None."""
    here = Path(__file__).resolve().parent
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = here / f"{LIBRARY_STEM}{suffix}"
        if candidate.is_file():
            return candidate
    return None


@functools.cache
def load() -> tuple[NearestLibrary | None, str]:
    """The library (loaded once per process) or None with the reason, for a fallback to the torch kernel."""
    path = library_path()
    if path is None:
        return None, "the fused kernel library is not built (no C++ compiler at install?)"
    try:
        return NearestLibrary(path), ""
    except NearestError as exc:
        return None, str(exc)


def nearest(
    queries: torch.Tensor,
    gallery: torch.Tensor,
    sq_norms: torch.Tensor | None = None,
    threads: int | None = None,
    isa: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries [M, C] against gallery rows [N, C]: the nearest row's exact L2 distance [M] and index [M].

    The one-matrix form of :meth:`NearestLibrary.search` (``sq_norms`` computed when not given; ``threads``
    defaults to torch's intra-op threads).

    Raises:
        NearestError: the library is not built, or a tensor it cannot take.
    """
    library, reason = load()
    if library is None:
        raise NearestError(reason)
    norms = sq_norms if sq_norms is not None else (gallery * gallery).sum(1)
    count = threads if threads is not None else torch.get_num_threads()
    return library.search(queries, [Segment(gallery, norms)], count, isa)
