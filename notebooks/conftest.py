"""For `make test`, which runs every notebook here with nbmake: the notebook kernels keep XLA's
full backend optimisation. tests/conftest.py turns it down for the suite's hundreds of tiny
compiles, and kernels inherit the environment; but the notebooks' training loops run long enough
that unoptimised code doubles their time (a tiny-preset step 0.5 s -> 1.0 s, AMD EPYC)."""

import os
import re

import pytest

LEVEL = re.compile(r"\s*--xla_backend_optimization_level=\S+")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    saved = os.environ.get("XLA_FLAGS")
    if saved is not None:
        os.environ["XLA_FLAGS"] = LEVEL.sub("", saved).strip()
    try:
        return (yield)
    finally:
        if saved is not None:
            os.environ["XLA_FLAGS"] = saved
