"""MFU bookkeeping (GPT-2's FLOPs per token, the devices' peak) and the benchmark script."""

import json
from types import SimpleNamespace

import jax

from gptjax import GPTConfig, heap
from gptjax.kernels import Kernels, resolve
from gptjax.training.flops import (
    chip,
    decode_bytes,
    flops_per_token,
    peak_bandwidth,
    peak_flops,
)
from gptjax.training.parallel import compute_dtype, describe_devices
from train.bench import speed as bench


def test_124m_at_half_an_h100_is_578k_tokens_per_second():
    flops = flops_per_token(GPTConfig.preset("124M"), 1024)
    assert flops == 6 * (124_439_808 - 1024 * 768) + 12 * 12 * 768 * 1024
    assert round(0.5 * 989e12 / flops, -3) == 578_000  # the performance issue's target


def test_peak_by_device_kind_and_none_on_cpu():
    kinds = ["NVIDIA H100 80GB HBM3", "TPU v5 lite"]
    assert peak_flops([SimpleNamespace(device_kind=k) for k in kinds]) == 989e12 + 197e12
    assert peak_flops(jax.devices()) is None  # the CPUs of the test machines
    assert describe_devices().endswith("(cpu), 1 process")


def test_chips_by_the_longest_device_kind_match():
    kind = lambda k: chip(SimpleNamespace(device_kind=k))
    assert kind("NVIDIA H100 PCIe") == (756e12, 2.0e12)  # before the SXM row
    assert kind("NVIDIA H100 80GB HBM3") == (989e12, 3.35e12)
    assert kind("NVIDIA H200") == (989e12, 4.8e12)
    assert kind("NVIDIA GH200 480GB").hbm == 4.0e12  # not the H200 row
    assert kind("NVIDIA L40S").bf16 == 362e12 and kind("NVIDIA L40").bf16 == 181e12
    assert kind("NVIDIA L4").hbm == 300e9
    assert kind("NVIDIA A100-SXM4-80GB").hbm == 2039e9
    assert kind("TPU v5 lite").bf16 == 197e12 and kind("TPU v5").bf16 == 459e12
    assert kind("TPU v6 lite").bf16 == 918e12
    assert kind("cpu") is None and peak_bandwidth(jax.devices()[0]) is None
    # A 124M decode step at B 1 in bf16 reads its weights and one row of cache: on an H200,
    # 4.8 TB/s / ~250 MB is the ~19K tokens/s roofline.
    step = decode_bytes(GPTConfig.preset("124M"), 1, 136, 2)
    assert step == 124_439_808 * 2 + 2 * 12 * 136 * 768 * 2
    assert round(4.8e12 / step, -3) == 19_000


def test_bench_prints_a_row_per_case_with_the_ratio_to_hf(capsys, monkeypatch):
    args = ["--seq-len", "16", "--new-tokens", "4", "--repeats", "1", "--json"]
    # Training rows each in a fresh process (--apart, as on a GPU, where JAX's and torch's
    # memory must never meet), decoding rows in this one.
    bench.main([*args, "--presets", "nano", "--decode-presets", "none", "--apart"])
    monkeypatch.setattr(bench, "peak_bandwidth", lambda: 1e9)  # as if on a 1 GB/s chip
    decode = ["--presets", "none", "--decode-presets", "nano", "--weights", "int8"]
    bench.main([*args, *decode, "--hf-heap", "kept"])  # HF in this process, on our heap
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["what"], r["impl"]) for r in rows] == [
        ("train_step", "gptjax"),
        ("train_step", "hf-torch"),
        ("generate", "gptjax"),
        ("generate", "hf-torch"),
    ]
    assert all(r["tok_per_s"] > 0 and r["device"] for r in rows)
    assert rows[2]["roofline"] > 0 and rows[3]["roofline"] > 0  # each against its weights'
    assert (rows[2]["weights"], rows[3]["weights"]) == ("int8", "fp32")  # HF's stay fp32
    assert rows[2]["bandwidth"] == 1e9 and rows[0]["cpu"] and isinstance(rows[0]["isa"], list)
    # where ours keep the heap (gptjax.heap), HF's rows say which one they ran on
    kept = "kept" if heap.kept() else "default"
    assert [r["heap"] for r in rows] == [kept, "default", kept, kept]
    # our rows carry the kernel policy they ran; HF's have none
    assert rows[0]["kernels"] == rows[2]["kernels"] == resolve(jax.devices()).to_dict()
    assert "kernels" not in rows[1]
    bench.main(["--presets", "nano", "--seq-len", "16", "--compile-only"])
    assert "nano train step compiles in" in capsys.readouterr().out


def test_auto_dtype_is_float32_on_cpu():
    assert compute_dtype("auto") == jax.numpy.float32  # bfloat16 only on GPUs and TPUs
    assert compute_dtype("bfloat16") == jax.numpy.bfloat16


def test_tokens_per_second_leave_out_evals_and_checkpoints(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from gptjax.training.loop import LoopConfig
    from gptjax.training.runlog import RunLog

    clock = iter([0.0, 2.0, 9.0, 10.0])  # start, fetch, eval and save done, next fetch
    monkeypatch.setattr("gptjax.training.runlog.time.perf_counter", lambda: next(clock))
    task = SimpleNamespace(identity={}, seen=("tokens_seen", 16), plots={}, kernels=Kernels())
    log = RunLog(LoopConfig(batch_size=4, out=str(tmp_path), progress=False), task, 0, 2)
    m = {"loss": 1.0, "lr": 1e-3, "grad_norm": 1.0}
    assert log.step_records([1], [m], False)[0]["tokens_per_s"] == 64 / 2
    log.restart_clock()  # after the eval and checkpoint of step 1
    assert log.step_records([2], [m], False)[0]["tokens_per_s"] == 64 / 1
