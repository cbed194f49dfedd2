"""The process heap on CPU runs (`gptjax.heap`): importing gptjax leaves it (and JAX's dispatch)
as it was; `keep()` applies glibc's settings where they help, and with them an executable's
temporaries stop being faulted in afresh on every call."""

import os
import platform
import subprocess
import sys

import pytest

from gptjax import heap
from tests.conftest import ROOT

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")


@glibc
def test_wanted_on_a_cpu_run_unless_turned_off_or_tuned_already(monkeypatch):
    monkeypatch.setattr(heap, "installed_now", lambda: ("0.10.2", []))
    monkeypatch.setattr(heap, "_backend_started", lambda: False)  # as on `import gptjax`
    assert heap.wanted({})
    assert heap.wanted({heap.OFF: "1"})
    assert not heap.wanted({heap.OFF: "0"})
    assert not heap.wanted({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
    assert not heap.wanted({"MALLOC_ARENA_MAX": "2"})
    assert not heap.wanted({heap.DISPATCH: "true"})
    monkeypatch.setattr(heap, "_backend_started", lambda: True)
    assert not heap.wanted({})  # gptjax imported after a computation: too late
    monkeypatch.setattr(heap, "_backend_started", lambda: False)
    monkeypatch.setattr(heap, "installed_now", lambda: ("0.10.2", ["jax-cuda12-plugin"]))
    assert not heap.wanted({})  # a GPU run's host memory is left to glibc's defaults


FAULTS = """
import resource, statistics, gptjax, jax, jax.numpy as jnp
gptjax.heap.keep()
x = jnp.ones((4096, 4096), jnp.float32)  # 64 MiB

@jax.jit
def f(x):
    a = jnp.exp(x)  # a temporary as large as x
    return (a @ jnp.ones((4096, 4), jnp.float32)).sum() + a[::-1].sum()

for _ in range(8):  # until the heap has grown to what the calls need
    f(x).block_until_ready()
faults = []
for _ in range(5):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    f(x).block_until_ready()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(gptjax.heap.kept(), statistics.median(faults))
"""


def python(script: str, **env) -> list[str]:
    """The words `script` prints, run in a fresh interpreter without the user's malloc settings."""
    clean = {k: v for k, v in os.environ.items() if not heap.user_setting(k)}
    run = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=clean | env,
        capture_output=True,
        text=True,
        check=True,
    )
    return run.stdout.split()


def faults_per_call(**env) -> tuple[str, float]:
    kept, faults = python(FAULTS, **env)
    return kept, float(faults)


IMPORT = """
import resource, sys, jax, numpy as np
dispatch = jax.config.values["jax_cpu_enable_async_dispatch"]
import gptjax
if sys.argv[1:] == ["keep"]:
    gptjax.heap.keep()
resident = lambda: int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize()
a = np.ones(512 * 2**20, np.uint8)  # 512 MB, touched
held = resident()
del a
print(dispatch, jax.config.values["jax_cpu_enable_async_dispatch"], (held - resident()) >> 20)
"""


@glibc
def test_importing_gptjax_changes_neither_the_heap_nor_the_dispatch():
    """After `import gptjax` JAX's dispatch is as it was and a freed 512 MB array goes back to
    the system; only `gptjax.heap.keep()` keeps it (and makes dispatch synchronous)."""
    before, after, freed = python(IMPORT)
    assert after == before == "True" and int(freed) > 500
    before, after, freed = python(IMPORT.replace("sys.argv[1:]", '["keep"]'))
    assert (before, after) == ("True", "False") and int(freed) < 10


@glibc
def test_a_kept_heap_reuses_the_temporaries_of_each_call():
    """glibc's defaults map each 64 MiB temporary afresh (16,384 page faults a call, more for
    the result); kept, a call faults in no page at all (the median call: now and then the heap
    still grows)."""
    kept, faults = faults_per_call(**{heap.OFF: "0"})
    assert kept == "False" and faults > 16_000
    kept, faults = faults_per_call()
    assert kept == "True" and faults < 100
