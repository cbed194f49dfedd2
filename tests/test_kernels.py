"""The kernel policy (`gptjax.kernels`): resolved from the devices and the dtype, overridable field
by field with one-line errors, and every implementation a CPU can run, chosen by passing a policy
(no detector patched), equal to GPT-2's reference in float32 and bfloat16."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gptjax import GPT, Kernels, init_params
from gptjax.accelerator import cpu_flags
from gptjax.config import GPTConfig
from gptjax.kernels import resolve
from gptjax.kernels.policy import MiB, defaults, override
from gptjax.training.cross_entropy import ce_chunks_for
from gptjax.training.steps import OptimConfig, init_state, lm_loss, make_train_step

BF16, F32 = jnp.bfloat16, jnp.float32
CFG = GPTConfig(vocab_size=200, context_length=16, emb_dim=32, n_heads=2, n_layers=2, drop_rate=0)
B, T = 4, 16
AMX = frozenset({"avx512f", "avx512_bf16", "amx_bf16"})


def no_probe():
    raise AssertionError("cuDNN is asked about only on a GPU in a half dtype")


def test_defaults_follow_the_platform_the_dtype_and_the_cpus_flags():
    assert defaults("cpu", F32, AMX) == Kernels("cpu", head="cpu", fence="cpu")
    amx = defaults("cpu", BF16, AMX)
    assert (amx.dense, amx.head, amx.attention) == ("cpu-bf16", "cpu-padded", "cpu-bf16")
    assert amx.ce_budget == 32 * MiB and amx.fence == "cpu" and amx.note == ""
    epyc = defaults("cpu", BF16, frozenset({"avx2", "fma"}))  # no AVX-512, no AMX
    assert (epyc.dense, epyc.head, epyc.attention) == ("xla", "padded", "reference")
    assert "no native bf16: bfloat16 runs slower than float32" in epyc.describe()
    assert defaults("cpu", BF16, frozenset({"avx512_bf16"})).note == ""
    gpu = defaults("gpu", BF16, cudnn=lambda: True)
    assert (gpu.head, gpu.attention, gpu.fence) == ("padded", "cudnn", "none")
    assert defaults("gpu", BF16, cudnn=lambda: False).attention == "reference"
    assert defaults("gpu", F32, cudnn=no_probe).attention == "reference"
    assert defaults("tpu", BF16, cudnn=no_probe).attention == "pallas"


class Device:
    def __init__(self, platform):
        self.platform = platform


def test_resolve_reads_the_devices_it_is_given():
    assert resolve(jax.devices(), F32) == defaults("cpu", F32, cpu_flags())
    assert resolve([Device("cuda")], F32) == Kernels("gpu", head="padded")
    assert resolve([Device("tpu")], F32).attention == "pallas"
    # cuDNN has no float32 kernel: asked for by either flag, a float32 step gets XLA's
    assert resolve([Device("gpu")], F32, "attention=cudnn").attention == "xla"
    assert resolve([Device("gpu")], F32, attention="cudnn").attention == "xla"
    with pytest.raises(ValueError, match="span several platforms"):
        resolve([Device("cpu"), Device("tpu")], F32)


def test_overrides_name_the_field_and_the_choices():
    k = override(Kernels("cpu", head="cpu"), "head=padded, attention=xla,ce_budget=32MiB")
    assert (k.head, k.attention, k.ce_budget) == ("padded", "xla", 32 * MiB)
    assert k.describe() == ("dense=xla head=padded attention=xla ce_budget=32MiB fence=none (cpu)")
    assert k.to_dict() == {
        "platform": "cpu",
        "dense": "xla",
        "head": "padded",
        "attention": "xla",
        "ce_budget": 32 * MiB,
        "fence": "none",
    }
    refusals = {
        "head=wide": "unknown head='wide'; choices: padded, unpadded, cpu, cpu-padded",
        "attention=cudnn": "attention=cudnn cannot run on cpu; choices there: reference, xla",
        "speed=max": "expected FIELD=VALUE with FIELD one of: dense, head, attention, fence",
        "ce_budget=lots": "ce_budget='lots': expected bytes",
    }
    for spec, message in refusals.items():
        with pytest.raises(ValueError, match=message):
            override(Kernels(), spec)
    with pytest.raises(ValueError, match="dense=cpu-bf16 cannot run on gpu; choices there: xla"):
        Kernels("gpu", dense="cpu-bf16")


@pytest.fixture(scope="module")
def setup():
    params = init_params(CFG, jax.random.key(0))
    ids = jax.random.randint(jax.random.key(1), (B, T + 1), 0, CFG.vocab_size)
    return params, {"inputs": ids[:, :-1], "targets": ids[:, 1:]}


@pytest.fixture(scope="module")
def reference(setup):
    """The reference's outputs (`Kernels()`) in each dtype, computed once."""
    return {dtype: outputs(Kernels(), dtype, *setup) for dtype in (F32, BF16)}


def outputs(kernels: Kernels, dtype, params, batch):
    """(logits, loss, gradients) of the tiny model under `kernels`; the loss over as many
    slices of T as the policy's ce_budget asks."""
    chunks = ce_chunks_for(B, T, CFG.vocab_size, CFG.emb_dim, kernels.ce_budget)
    loss = lm_loss(CFG, dtype, kernels=kernels, ce_chunks=chunks)

    @jax.jit
    def run(params):
        logits = GPT(CFG, dtype, kernels).apply({"params": params}, batch["inputs"])
        value, grads = jax.value_and_grad(lambda p: loss(p, batch, None, False)[0])(params)
        return logits, value, grads

    return run(params)


# Every implementation a CPU can run, each in one of three policies away from the reference
# (Kernels(): XLA's dense, unpadded head, reference einsums, no fence, whole logits); a
# ce_budget of 1 byte slices the loss (through the CPU head's weight gradient in the third).
VARIANTS = [
    "dense=cpu-bf16,head=cpu,attention=cpu-bf16,fence=cpu",
    "head=padded,attention=xla,ce_budget=1",
    "head=cpu-padded,ce_budget=1",
]
# float32 to rounding; bfloat16's products and sums round in other places in each
TOLERANCE = {F32: (1e-5, 1e-5), BF16: (2e-3, 0.05)}  # (loss and logits rtol, gradients atol)


@pytest.mark.parametrize("dtype", [F32, BF16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_cpu_implementation_gives_the_references_logits_and_gradients(
    setup, reference, variant, dtype
):
    ref_logits, ref_loss, ref_grads = reference[dtype]
    logits, loss, grads = outputs(override(Kernels(), variant), dtype, *setup)
    rtol, atol = TOLERANCE[dtype]
    assert logits.shape == ref_logits.shape == (B, T, CFG.vocab_size)
    scale = float(jnp.abs(ref_logits).max())
    np.testing.assert_allclose(logits, ref_logits, rtol=rtol, atol=rtol * scale)
    np.testing.assert_allclose(loss, ref_loss, rtol=rtol)
    for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads), strict=True):
        assert g.dtype == r.dtype == F32
        np.testing.assert_allclose(g, r, atol=atol * float(jnp.abs(r).max()) + 1e-7)


@pytest.mark.parametrize("dtype", [F32, BF16], ids=["float32", "bfloat16"])
def test_a_train_step_under_the_gpu_policy_matches_the_cpu_policy(setup, dtype):
    """The GPU's choices (padded head, XLA's dense, no fence) run on the CPU and take the same
    step as this CPU's own policy: the same loss, gradient norm and updated parameters (plain
    SGD, so the update is the gradient)."""
    params, batch = setup
    oc = OptimConfig(grad_clip=None)
    steps = {}
    for name, kernels in {
        "gpu": defaults("gpu", dtype, cudnn=lambda: False),
        "cpu": resolve(jax.devices(), dtype),
    }.items():
        chunks = ce_chunks_for(B, T, CFG.vocab_size, CFG.emb_dim, kernels.ce_budget)
        step = make_train_step(
            lm_loss(CFG, dtype, kernels=kernels, ce_chunks=chunks), optax.sgd(1.0), oc
        )
        state = init_state(params, optax.sgd(1.0), jax.random.key(2))
        steps[name] = jax.jit(step)(state, batch)
    (gpu, gpu_m), (cpu, cpu_m) = steps["gpu"], steps["cpu"]
    rtol, atol = TOLERANCE[dtype]
    np.testing.assert_allclose(gpu_m["loss"], cpu_m["loss"], rtol=rtol)
    np.testing.assert_allclose(gpu_m["grad_norm"], cpu_m["grad_norm"], rtol=10 * rtol)
    for new_gpu, new_cpu, old in zip(
        jax.tree.leaves(gpu.params),
        jax.tree.leaves(cpu.params),
        jax.tree.leaves(params),
        strict=True,
    ):
        g_gpu, g_cpu = old - new_gpu, old - new_cpu  # the gradients each step applied
        # Each updated parameter is rounded to its own float32 step, which the difference keeps.
        rounding = 2 * float(jnp.finfo(F32).eps * jnp.abs(old).max())
        np.testing.assert_allclose(g_gpu, g_cpu, atol=atol * float(jnp.abs(g_cpu).max()) + rounding)
