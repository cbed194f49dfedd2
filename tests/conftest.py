"""Test set-up: CPU only, and a cache folder that is a copy of ../shared/data, so no test touches
the network."""

import atexit
import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

# The suite compiles hundreds of tiny programs (here, in its subprocesses and in the notebook
# kernels, which inherit this environment) and runs each a few times. XLA's backend optimisation
# is most of each compile and buys nothing at these sizes: at level 0 a 4-step tiny pretraining
# run takes 13 s instead of 24 s (AMD EPYC). Set before JAX starts a backend.
FAST_COMPILE = "--xla_backend_optimization_level=0"
if FAST_COMPILE not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE}".strip()

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
