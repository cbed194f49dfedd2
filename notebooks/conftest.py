"""For `make test`, which runs every notebook here with nbmake: the kernels of the notebooks that
train for long keep XLA's full backend optimisation. tests/conftest.py turns it down for the
suite's hundreds of tiny compiles, and kernels inherit the environment; but a long training loop
runs unoptimised code at half speed (a tiny-preset step 0.5 s -> 1.0 s, AMD EPYC), while the
other notebooks mostly compile (level 0: notebooks 1, 2, 3, 6, 7 took 55 s instead of 66 s,
Intel Xeon)."""

import os
import re

import pytest

LEVEL = re.compile(r"\s*--xla_backend_optimization_level=\S+")
TRAINING = ("04_pretraining", "05_classification", "08_chat_and_rl", "09_inside_a_gpt")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    saved = os.environ.get("XLA_FLAGS")
    if saved is not None and item.path.stem in TRAINING:
        os.environ["XLA_FLAGS"] = LEVEL.sub("", saved).strip()
    try:
        return (yield)
    finally:
        if saved is not None:
            os.environ["XLA_FLAGS"] = saved
