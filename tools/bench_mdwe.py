"""MemoryDenyWriteExecute measured, not guessed: backbone ms per image with and without the kernel's W^X rule.

systemd's ``MemoryDenyWriteExecute=yes`` refuses memory that is writable and executable, or made executable
later. Linux >= 6.3 offers the same rule to one process as ``prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN)``
(systemd uses it where available), so no systemd and no namespaces are needed: the benchmark runs the same
feature extraction in child processes: plain, with the rule set before PyTorch loads, and with the rule and
oneDNN disabled (the only way PyTorch runs under it), and prints each and its ratio to plain (one run).

    .venv/bin/python tools/bench_mdwe.py                 # batch 8, 20 timed batches, CPU
    .venv/bin/python tools/bench_mdwe.py --device cuda   # on a GPU machine
"""

from __future__ import annotations

import inspector as _package  # noqa: F401 - first: sets OMP_WAIT_POLICY before torch loads

# isort: split

import argparse
import ctypes
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence

PR_SET_MDWE = 65
PR_GET_MDWE = 66
PR_MDWE_REFUSE_EXEC_GAIN = 1
SEED = 0
MS_PER_S = 1e3
CHILD_TIMEOUT_S = 1800
MODES = ("plain", "mdwe", "mdwe_no_onednn")


def set_mdwe() -> None:
    """Refuse writable+executable memory for this process from now on (as MemoryDenyWriteExecute=yes).

    Raises:
        OSError: the kernel does not support PR_SET_MDWE (Linux < 6.3).
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, "prctl(PR_SET_MDWE) refused (Linux >= 6.3 needed)")
    if libc.prctl(PR_GET_MDWE, 0, 0, 0, 0) != PR_MDWE_REFUSE_EXEC_GAIN:
        raise OSError("PR_GET_MDWE does not report the rule as set")


def child(mode: str, device: str, batch: int, reps: int) -> None:
    """Time the backbone (the engine's extract) on demo parts; print one JSON line."""
    if mode.startswith("mdwe"):
        set_mdwe()
    import numpy as np
    import torch

    if mode.endswith("no_onednn"):  # PyTorch's own convolution kernels: no run-time code generation
        torch.backends.mkldnn.set_flags(False)  # type: ignore[no-untyped-call]  # rest of this process

    from inspector.config.model import ModelConfig
    from inspector.config.runtime import RuntimeConfig
    from inspector.demo.parts import render_part
    from inspector.model.engine import FeatureEngine

    engine = FeatureEngine(ModelConfig(), RuntimeConfig(device=device))
    rng = np.random.default_rng(SEED)
    images = [render_part(rng, 256)[0] for _ in range(batch)]
    try:
        for _ in range(2):
            engine.extract(images, {})  # warm-up: kernels chosen (or generated) here
    except RuntimeError as exc:
        print(json.dumps({"mode": mode, "device": device, "error": str(exc).splitlines()[0]}))
        return
    per_image = []
    for _ in range(reps):
        started = time.perf_counter()
        engine.extract(images, {})
        per_image.append((time.perf_counter() - started) * MS_PER_S / batch)
    print(json.dumps({"mode": mode, "device": device, "ms_per_image": statistics.median(per_image)}))


def main(argv: Sequence[str] | None = None) -> int:
    """Run one child per mode and print their medians and the ratios to the plain process."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.device, args.batch, args.reps)
        return 0
    results: dict[str, dict[str, object]] = {}
    for mode in MODES:
        cmd = [sys.executable, __file__, "--child", mode, "--device", args.device]
        cmd += ["--batch", str(args.batch), "--reps", str(args.reps)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, check=False)
        if done.returncode != 0:
            print(f"{mode}: exit {done.returncode}: {done.stderr.strip()[-2000:]}", file=sys.stderr)
            return 1
        results[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    plain = results["plain"]["ms_per_image"]
    assert isinstance(plain, float)
    print(
        f"device {args.device}, batch {args.batch}, median of {args.reps} batches (backbone + preprocessing)"
    )
    print("| process | ms/img | vs plain |")
    print("|---|---|---|")
    for mode, doc in results.items():
        ms = doc.get("ms_per_image")
        if isinstance(ms, float):
            print(f"| {mode} | {ms:.2f} | {ms / plain:.2f}x |")
        else:
            print(f"| {mode} | fails: {doc.get('error')} | - |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
