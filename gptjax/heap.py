"""The process heap on a CPU run: XLA's step buffers reused instead of mapped afresh each call.

XLA's CPU runtime mallocs each executable's temporaries on every call and frees them after (the
124M train step's at B 4, T 128: one 995 MB block). glibc serves a block that large from a
fresh mmap and unmaps it on free, so every step faulted its temporaries in page by page: 250,000
faults and 0.4 s of kernel time per 124M step on a 2-core Xeon.

`keep` asks glibc (`mallopt`) never to mmap a block and never to give the heap's free top
back to the system, so after the first steps the block is reused in place. Two conditions make
that work: the block must come from the main thread's heap, since a block that large from any
other thread's arena is mmapped whatever the settings, so JAX's CPU dispatch is made
synchronous (the caller's thread runs the executable); and XLA's kernels' own scratch blocks,
malloced from its worker threads, then stay in their threads' arenas instead of splitting the
freed block (with every thread on the main heap, that fragmentation grew the 124M run's resident
size from 3.0 to 4.6-7.4 GB). Measured here, median step: 124M bf16 1.11 s -> 0.89 s, tiny
float32 210 -> 176 ms, resident size unchanged (3.0 GB, 0.78 GB).

Importing gptjax changes nothing: keeping the heap is a choice for the whole process (freed
memory is never given back to the system, and JAX dispatches synchronously), so only a program
that owns its process makes it, by calling `keep()` before its first JAX computation. The
command-line entry points do (pretrain, the finetunes, rl, serve, generate, bench), and a
library user may too. It applies only where it helps and is wanted: glibc is the C library, no
GPU or TPU plugin is installed (a CPU run), JAX has not started its backend yet, the user has
set none of glibc's malloc variables nor JAX_CPU_ENABLE_ASYNC_DISPATCH, and GPTJAX_KEEP_HEAP is
not 0.
"""

from __future__ import annotations

import ctypes
import os
import platform
from importlib.util import find_spec

from gptjax.accelerator import installed_now

OFF = "GPTJAX_KEEP_HEAP"
DISPATCH = "JAX_CPU_ENABLE_ASYNC_DISPATCH"
M_MMAP_MAX, M_TRIM_THRESHOLD = -4, -1  # mallopt's parameters (glibc's malloc.h)
SETTINGS = ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1))  # -1: never trim


def user_setting(name: str) -> bool:
    """Whether environment variable `name` is one of the user's own say over what this sets."""
    return name in ("GLIBC_TUNABLES", DISPATCH) or name.startswith("MALLOC_")


def wanted(environ=os.environ) -> bool:
    """Whether to keep the heap here: glibc, a CPU run, not turned off, not tuned by the user."""
    if environ.get(OFF, "") == "0" or platform.libc_ver()[0] != "glibc":
        return False
    if any(user_setting(name) for name in environ):
        return False
    _, plugins = installed_now()
    return not plugins and find_spec("libtpu") is None and not _backend_started()


def _backend_started() -> bool:
    """Whether JAX has started a backend already (gptjax imported after a computation): its
    dispatch is fixed then, and the heap settings alone would not help."""
    try:
        from jax._src import xla_bridge

        return xla_bridge.backends_are_initialized()
    except Exception:  # an internal API: if it moves, assume not
        return False


def keep(environ=os.environ) -> bool:
    """Apply `SETTINGS` and synchronous CPU dispatch when `wanted`, for the rest of the process;
    True if glibc took them (then `kept()` says so)."""
    global _kept
    if _kept:
        return True
    if not wanted(environ):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    if not all(mallopt(param, value) == 1 for param, value in SETTINGS):
        return False
    import jax

    jax.config.update("jax_cpu_enable_async_dispatch", False)
    _kept = True
    return True


def kept() -> bool:
    """Whether this process keeps its heap (`keep` took)."""
    return _kept


def describe() -> str:
    """The line a run's log shows about the heap."""
    if _kept:
        return "heap: kept (glibc never unmaps or trims it; JAX dispatches synchronously)"
    return "heap: glibc's defaults"


_kept = False  # set once, by `keep`: the process's malloc settings cannot be read back
