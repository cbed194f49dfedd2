"""The accelerator's software, looked at before jax starts a backend: the versions a run's device
line names, and the GPU scatter-add workaround.

jaxlib 0.10.2 and 0.11.0 ship an LLVM whose NVPTX backend lowers float32 atomic adds to a
compare-and-swap loop (its flush-to-zero handling changed), which makes scatter-add hundreds of
times slower when many updates hit the same rows (jax-ml/jax#38806, openxla/xla#46225; fixed in
0.11.1). The embedding's gradient is exactly that: token ids repeat. With an affected jaxlib and
a CUDA plugin installed, `apply_scatter_workaround` (run on `import gptjax`) adds the LLVM option
-nvptx-allow-ftz-atomics to XLA_FLAGS, which restores the native atomic; XLA reads XLA_FLAGS
once, when the first backend starts, so it must run before that. GPTJAX_NO_SCATTER_WORKAROUND=1
turns it off; a user who set the option (or --xla_gpu_ftz=true) already is left alone.
"""

from __future__ import annotations

import functools
import os
import re
import warnings
from importlib import metadata
from importlib.util import find_spec

FTZ_ATOMICS = "-nvptx-allow-ftz-atomics"
AFFECTED = ((0, 10, 2), (0, 11, 0))  # first and last jaxlib release with the slow lowering
PLUGINS = ("jax-cuda12-plugin", "jax-cuda13-plugin")
OFF = "GPTJAX_NO_SCATTER_WORKAROUND"
EXTRA = "--xla_backend_extra_options="


def release(version: str | None) -> tuple[int, int, int] | None:
    """(0, 10, 2) from "0.10.2" (or "0.10.2.dev20260101"); None when there is none."""
    match = re.match(r"(\d+)\.(\d+)\.(\d+)", version or "")
    return tuple(map(int, match.groups())) if match else None


def installed(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _cpuinfo(key: str) -> str | None:
    """The value of the first `key : value` line of /proc/cpuinfo (None where unreadable)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU's model name as lscpu shows it (e.g. "Intel(R) Xeon(R) Processor")."""
    import platform

    return _cpuinfo("model name") or platform.processor() or platform.machine()


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as /proc/cpuinfo lists them (e.g. avx512f, amx_bf16); empty where
    unreadable."""
    return frozenset((_cpuinfo("flags") or "").split())


def versions() -> dict[str, str]:
    """{distribution: version} of jax, jaxlib and whichever accelerator plugins are installed."""
    names = ("jax", "jaxlib", *PLUGINS, "libtpu")
    return {name: v for name in names if (v := installed(name)) is not None}


def needs_ftz_atomics(jaxlib: str | None, plugins: list[str], xla_flags: str, off: str) -> bool:
    """Whether to add the option: an affected jaxlib, a CUDA plugin, not turned off (`off`, the
    variable's value) and not already in `xla_flags`."""
    version = release(jaxlib)
    if version is None or not AFFECTED[0] <= version <= AFFECTED[1] or not plugins:
        return False
    if off not in ("", "0"):
        return False
    return FTZ_ATOMICS not in xla_flags and "--xla_gpu_ftz=true" not in xla_flags.lower()


def with_backend_option(xla_flags: str, option: str) -> str:
    """`xla_flags` with `option` added to --xla_backend_extra_options (a comma list)."""
    tokens = xla_flags.split()
    for i, token in enumerate(tokens):
        if token.startswith(EXTRA):
            old = token.removeprefix(EXTRA)
            tokens[i] = EXTRA + (f"{old},{option}" if old else option)
            return " ".join(tokens)
    return " ".join([*tokens, EXTRA + option])


def installed_now() -> tuple[str | None, list[str]]:
    """(jaxlib's version, the CUDA plugins present), cheaply: on every `import gptjax`, where
    `versions` (a scan of every installed distribution) would cost a tenth of a second."""
    try:
        from jaxlib import version

        jaxlib = version.__version__
    except ImportError:
        jaxlib = None
    plugins = [p for p in PLUGINS if find_spec(p.replace("-", "_")) is not None]
    return jaxlib, plugins


def apply_scatter_workaround(environ=os.environ) -> bool:
    """Add the option to environ["XLA_FLAGS"] when `needs_ftz_atomics`; True if it did. Warns
    (once) when XLA had read its flags already, so the option cannot take effect."""
    jaxlib, plugins = installed_now()
    flags = environ.get("XLA_FLAGS", "")
    if not needs_ftz_atomics(jaxlib, plugins, flags, environ.get(OFF, "")):
        return False
    environ["XLA_FLAGS"] = with_backend_option(flags, FTZ_ATOMICS)
    if not _parsed(FTZ_ATOMICS):
        warnings.warn(
            f"jaxlib {jaxlib} makes GPU scatter-add very slow (jax-ml/jax#38806) and "
            f"jax started before gptjax could set XLA_FLAGS={EXTRA}{FTZ_ATOMICS}: import gptjax "
            "first, or set that variable before starting Python",
            stacklevel=2,
        )
    return True


def _parsed(option: str) -> bool:
    """Whether XLA's parsed flags hold `option`. Building CompileOptions makes XLA read
    XLA_FLAGS if it has not yet (and locks our change in); after that the variable is ignored."""
    try:
        from jaxlib import xla_client

        return option.encode() in xla_client.CompileOptions().SerializeAsString()
    except Exception:  # an internal API: if it moves, do not stop anyone's import
        return True


def describe(applied: bool) -> str:
    """e.g. "jax 0.10.2, jaxlib 0.10.2, jax-cuda13-plugin 0.10.2; scatter-add workaround on"."""
    shown = ", ".join(f"{name} {v}" for name, v in versions().items())
    return shown + ("; scatter-add workaround on (-nvptx-allow-ftz-atomics)" if applied else "")


SCATTER_WORKAROUND = apply_scatter_workaround()  # on import, before any backend starts
