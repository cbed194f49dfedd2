"""Test set-up: CPU only, and a cache folder that is a copy of ../shared/data, so no test touches
the network."""

import atexit
import gc
import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")

# The suite compiles thousands of tiny programs (here, in its subprocesses and in the notebook
# kernels, which inherit this environment) and runs each a few times, so compiling is most of its
# time. XLA's backend optimisation buys nothing at these sizes: at level 0 a 4-step tiny
# pretraining run takes 13 s instead of 24 s (AMD EPYC). XLA's newer CPU fusion emitters cost
# about 40% more compile time than the older ones and run these programs no faster: without them
# an eager op compiles in 23 ms instead of 37 ms and the tiny train step in 0.8 s instead of
# 1.4 s, test_model.py and test_switches.py take 44 s instead of 66 s (Intel Xeon). XLA splits
# each program's LLVM module into up to 32 parts to compile on several threads; on a machine
# the suite already keeps busy that only adds work: in one part the tiny train step compiles in
# 0.62 CPU-s instead of 0.77, and test_model, test_switches, test_training and test_attention
# take 59-62 CPU-s instead of 69 (Intel Xeon). Set before JAX starts a backend.
FAST_COMPILE = (
    "--xla_backend_optimization_level=0",
    "--xla_cpu_use_fusion_emitters=false",
    "--xla_cpu_parallel_codegen_split_count=1",
)
for flag in FAST_COMPILE:
    if flag.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()

# Each test process holds torch, transformers, lm-eval and thousands of compiled programs, and
# tracing makes garbage fast, so Python's default thresholds walk that heap again and again:
# collecting a tenth as often cut the collector's time in test_model, test_switches, test_probe
# and test_weights from 6.4 s to 3.6 s of about 80 s, at the same peak memory (Intel Xeon).
gc.set_threshold(50_000, 20, 100)

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("GPTJAX_SHARED_DATA", ROOT.parent / "shared" / "data"))


def _seed_cache() -> Path:
    if not SHARED.is_dir():
        raise RuntimeError(
            f"{SHARED}: offline data copy not found; set GPTJAX_SHARED_DATA to a folder laid out "
            "like ../shared/data"
        )
    cache = Path(_session_dir("gptjax-cache-"))
    shutil.copytree(SHARED, cache, dirs_exist_ok=True, ignore=shutil.ignore_patterns("README.md"))
    return cache


def _session_dir(prefix: str) -> str:
    """A temporary folder removed when the test session ends."""
    path = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


os.environ["GPTJAX_CACHE"] = str(_seed_cache())

# One XLA compilation cache for the session: the many subprocess runs (pretrain, resume after a
# signal, the CLIs) compile the same tiny programs, which is half of each one's time.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _session_dir("gptjax-xla-")
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory, worker_id) -> Path:
    """One pretraining run (tests.runs.REFERENCE: 24 steps of the nano preset, checkpoints 8,
    16 and 24), made once for the whole session and shared by every xdist worker: the run that
    interrupted runs must end equal to, and the weights that --init-from, generate and export
    start from. Read it; copy it before changing it."""
    from filelock import FileLock

    from tests.runs import REFERENCE, pretrain

    shared = tmp_path_factory.getbasetemp()
    if worker_id != "master":  # an xdist worker's: this session's folder is the one above it
        shared = shared.parent
    out = shared / "reference-run"
    with FileLock(str(shared / "reference-run.lock")):
        if not (out / "done").is_file():
            shutil.rmtree(out, ignore_errors=True)
            res = pretrain(out, *REFERENCE)
            assert res.returncode == 0, res.stderr
            (out / "done").write_text(res.stderr)
    return out


def pytest_collection_modifyitems(config, items):
    """`make test` runs two xdist workers with --dist loadgroup: tests go to whichever worker is
    free, one by one, except the tests of a module whose module- or class-scoped fixtures are
    costly to make twice (a trained model, a server), which stay together on one worker."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        defs = info.name2fixturedefs.values() if info is not None else ()
        if any(d[-1].scope in ("module", "class") for d in defs if d):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
