"""The GPU scatter-add workaround picks its XLA flag exactly for affected jaxlib releases with a
CUDA plugin, leaves a user's own setting alone, and says so in the device line."""

import pytest

from gptjax import accelerator
from gptjax.accelerator import FTZ_ATOMICS, apply_scatter_workaround, needs_ftz_atomics

CUDA12, CUDA13 = ["jax-cuda12-plugin"], ["jax-cuda13-plugin"]
ON = f"--xla_backend_extra_options={FTZ_ATOMICS}"


@pytest.mark.parametrize(
    ("jaxlib", "plugins", "flags", "off", "want"),
    [
        ("0.10.1", CUDA12, "", "", False),  # before the regression
        ("0.10.2", CUDA12, "", "", True),
        ("0.10.2", [], "", "", False),  # a CPU (or TPU) install
        ("0.11.0", CUDA13, "", "", True),
        ("0.11.1", CUDA13, "", "", False),  # fixed
        ("0.12.0", CUDA13, "", "", False),
        ("0.10.2.dev20260101", CUDA12, "", "", True),
        (None, CUDA12, "", "", False),
        ("0.10.2", CUDA12, ON, "", False),  # the user set it already
        ("0.10.2", CUDA12, "--xla_gpu_ftz=TRUE", "", False),
        ("0.10.2", CUDA12, "", "1", False),  # GPTJAX_NO_SCATTER_WORKAROUND=1
        ("0.10.2", CUDA12, "", "0", True),
    ],
)
def test_the_flag_is_needed_exactly_for_affected_jaxlib_with_a_cuda_plugin(
    jaxlib, plugins, flags, off, want
):
    assert needs_ftz_atomics(jaxlib, plugins, flags, off) is want


def test_the_option_joins_existing_flags():
    join = accelerator.with_backend_option
    assert join("", FTZ_ATOMICS) == ON
    assert join("--xla_dump_to=/tmp/x", FTZ_ATOMICS) == f"--xla_dump_to=/tmp/x {ON}"
    both = join("--xla_backend_extra_options=-foo --a=1", FTZ_ATOMICS)
    assert both == f"--xla_backend_extra_options=-foo,{FTZ_ATOMICS} --a=1"


def test_apply_sets_xla_flags_only_on_an_affected_gpu_install(monkeypatch):
    gpu = ("0.10.2", ["jax-cuda12-plugin"])
    monkeypatch.setattr(accelerator, "installed_now", lambda: gpu)
    monkeypatch.setattr(accelerator, "_parsed", lambda option: True)
    env = {"XLA_FLAGS": "--xla_dump_to=/tmp/x"}
    assert apply_scatter_workaround(env) and env["XLA_FLAGS"] == f"--xla_dump_to=/tmp/x {ON}"
    assert not apply_scatter_workaround(env)  # already there: once is enough
    off = {accelerator.OFF: "1"}
    assert not apply_scatter_workaround(off) and "XLA_FLAGS" not in off
    monkeypatch.setattr(accelerator, "_parsed", lambda option: False)  # XLA read its flags
    with pytest.warns(UserWarning, match="import gptjax first"):
        assert apply_scatter_workaround({})
    monkeypatch.setattr(accelerator, "installed_now", lambda: ("0.10.2", []))
    env = {}
    assert not apply_scatter_workaround(env) and env == {}


def test_the_cheap_look_agrees_with_the_installed_distributions():
    jaxlib, plugins = accelerator.installed_now()
    versions = accelerator.versions()
    assert jaxlib == versions["jaxlib"]
    assert plugins == [p for p in accelerator.PLUGINS if p in versions]


def test_the_device_line_names_the_versions():
    from gptjax.training.parallel import describe_devices

    line = describe_devices(software=True)
    versions = accelerator.versions()
    assert f"jax {versions['jax']}, jaxlib {versions['jaxlib']}" in line
    assert ("workaround on" in line) is accelerator.SCATTER_WORKAROUND
    assert "workaround on" in accelerator.describe(True)


@pytest.mark.parametrize(
    ("cuda", "accel", "extra"),
    [
        ("13.0", "", "cuda13"),
        ("12.8", "", "cuda12"),
        ("13.0", "cuda12", "cuda12"),
        ("13.0", "cpu", ""),
    ],
)
def test_make_picks_the_cuda_extra_by_the_driver(tmp_path, cuda, accel, extra):
    """`make` installs jax[cuda13] where nvidia-smi reports CUDA 13, jax[cuda12] before it;
    ACCEL= overrides (a dry run: nothing is installed)."""
    import os
    import subprocess

    from tests.conftest import ROOT

    smi = tmp_path / "nvidia-smi"
    smi.write_text(
        '#!/bin/sh\nif [ "$1" = "-L" ]; then echo "GPU 0: NVIDIA H200"; exit 0; fi\n'
        f'echo "| NVIDIA-SMI 580.65  Driver Version: 580.65  CUDA Version: {cuda} |"\n'
    )
    smi.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    args = ["make", "-n", "-B", ".venv/.runtime", *([f"ACCEL={accel}"] if accel else [])]
    out = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    want = f"-e '.[{extra}]'" if extra else "-e '.'"
    assert want in out.stdout, out.stdout
