"""What machine a benchmark ran on: the CPU's model, the instruction sets that decide its matmul
speed (AVX2, AVX-512, AVX-512 BF16, AMX), and the memory bandwidth it reaches copying an array,
which bounds decoding on a CPU (every weight is read once per step)."""

from __future__ import annotations

import os
import statistics
import time

import numpy as np

from gptjax.accelerator import cpu_flags, cpu_model

# /proc/cpuinfo flag -> the name people know it by
ISA = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_bf16": "AVX-512 BF16", "amx_bf16": "AMX-BF16",
       "amx_int8": "AMX-INT8"}  # fmt: skip


def isa() -> dict[str, bool]:
    """{AVX2, AVX-512, ...: present?} from the CPU's flags (all False where unreadable)."""
    flags = cpu_flags()
    return {name: flag in flags for flag, name in ISA.items()}


def copy_bandwidth(mib: int = 256, repeats: int = 5) -> float:
    """Bytes/s moved copying a `mib` MiB array into another (read + write, as STREAM's Copy
    counts them), median of `repeats` after a first touch: what one process reaches on this
    machine, the bound a decode step that reads its weights once is held to."""
    src = np.ones(mib << 18, np.float32)  # mib MiB
    dst = np.empty_like(src)
    np.copyto(dst, src)  # pages mapped before timing
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(dst, src)
        times.append(time.perf_counter() - start)
    return 2 * src.nbytes / statistics.median(times)


def describe(bandwidth: float | None) -> str:
    """e.g. "CPU: Intel(R) Xeon(R) Processor, 2 cores | AVX2 yes, AVX-512 yes, ... | copy
    bandwidth 20.1 GB/s"."""
    flags = ", ".join(f"{name} {'yes' if on else 'no'}" for name, on in isa().items())
    line = f"CPU: {cpu_model()}, {os.cpu_count()} cores | {flags}"
    return line + (f" | copy bandwidth {bandwidth / 1e9:.1f} GB/s" if bandwidth else "")
