"""For `make test`, which runs every notebook here with nbmake: the kernels of the notebooks that
train for long run XLA's default compiler. tests/conftest.py turns XLA's backend optimisation
down and its newer CPU fusion emitters off for the suite's thousands of tiny compiles, and
kernels inherit the environment; but a long training loop runs unoptimised code at half speed (a
tiny-preset step 0.27 s -> 0.46 s), and at full optimisation the older emitters compile the tiny
train step in 6.0 s instead of 2.9 s. Run alone on an Intel Xeon, notebooks 4, 5, 8 and 9 take
83 s with XLA's defaults and 105 s with the suite's flags, while the other notebooks mostly
compile (1, 2, 3, 6, 7: 46 s with the suite's flags, 61 s with the defaults)."""

import os

import pytest

TRAINING = ("04_pretraining", "05_classification", "08_chat_and_rl", "09_inside_a_gpt")
# The names of tests/conftest.py's FAST_COMPILE flags (that module is not importable from here
# when pytest runs the notebooks alone).
FAST_COMPILE = (
    "--xla_backend_optimization_level",
    "--xla_cpu_use_fusion_emitters",
    "--xla_cpu_parallel_codegen_split_count",
)


def xla_defaults(flags: str) -> str:
    """`flags` without the suite's compile-speed flags."""
    return " ".join(f for f in flags.split() if f.split("=")[0] not in FAST_COMPILE)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    saved = os.environ.get("XLA_FLAGS")
    if saved is not None and item.path.stem in TRAINING:
        os.environ["XLA_FLAGS"] = xla_defaults(saved)
    try:
        return (yield)
    finally:
        if saved is not None:
            os.environ["XLA_FLAGS"] = saved
