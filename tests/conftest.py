"""Test set-up: CPU only, and a cache folder that is a copy of ../shared/data, so no test touches
the network."""

import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("GPTJAX_SHARED_DATA", ROOT.parent / "shared" / "data"))


def _seed_cache() -> Path:
    if not SHARED.is_dir():
        raise RuntimeError(
            f"{SHARED}: offline data copy not found; set GPTJAX_SHARED_DATA to a folder laid out "
            "like ../shared/data"
        )
    cache = Path(tempfile.mkdtemp(prefix="gptjax-cache-"))
    shutil.copytree(SHARED, cache, dirs_exist_ok=True, ignore=shutil.ignore_patterns("README.md"))
    return cache


os.environ["GPTJAX_CACHE"] = str(_seed_cache())
