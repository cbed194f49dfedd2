"""MFU bookkeeping: GPT-2's FLOPs per token and the devices' peak."""

from types import SimpleNamespace

import jax

from gptjax import GPTConfig
from gptjax.flops import flops_per_token, peak_flops
from gptjax.parallel import describe_devices


def test_124m_at_half_an_h100_is_578k_tokens_per_second():
    flops = flops_per_token(GPTConfig.preset("124M"), 1024)
    assert flops == 6 * (124_439_808 - 1024 * 768) + 12 * 12 * 768 * 1024
    assert round(0.5 * 989e12 / flops, -3) == 578_000  # the performance issue's target


def test_peak_by_device_kind_and_none_on_cpu():
    kinds = ["NVIDIA H100 80GB HBM3", "TPU v5 lite"]
    assert peak_flops([SimpleNamespace(device_kind=k) for k in kinds]) == 989e12 + 197e12
    assert peak_flops(jax.devices()) is None  # the CPUs of the test machines
    assert describe_devices().endswith("(cpu), 1 process")
