"""The training core: parity with PyTorch AdamW, gradient accumulation, masking, schedules."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gptjax import GPTConfig, init_params
from gptjax.data import IGNORE
from gptjax.kernels import Kernels
from gptjax.kernels.policy import defaults
from gptjax.training.cross_entropy import ce_chunks_for, cross_entropy_sum
from gptjax.training.steps import (
    OptimConfig,
    clip_by_global_norm,
    init_state,
    lm_loss,
    lr_schedule,
    make_eval_step,
    make_optimizer,
    make_train_step,
)

CFG = GPTConfig(vocab_size=89, context_length=16, emb_dim=32, n_heads=4, n_layers=2, drop_rate=0.0)


def random_batch(seed, B=4, T=16, V=89):
    ids = np.random.default_rng(seed).integers(0, V, (B, T + 1)).astype(np.int32)
    return {"inputs": ids[:, :-1], "targets": ids[:, 1:]}


def run(cfg, oc, batches, grad_accum=1, params=None):
    opt = make_optimizer(oc)
    params = init_params(cfg, jax.random.key(0)) if params is None else params
    state = init_state(params, opt, jax.random.key(1))
    step = jax.jit(make_train_step(lm_loss(cfg), opt, oc, grad_accum=grad_accum))
    losses = []
    for b in batches:
        state, m = step(state, b)
        losses.append(float(m["loss"]))
    return state, losses


def test_steps_lower_the_loss():
    batch = random_batch(0)
    _, losses = run(CFG, OptimConfig(lr=3e-3), [batch] * 8)
    assert losses[-1] < losses[0] - 0.5


def test_ignored_targets_count_for_nothing():
    logits = jax.random.normal(jax.random.key(0), (2, 3, 5))
    targets = jnp.array([[1, IGNORE, 2], [IGNORE, IGNORE, 4]])
    s, n = cross_entropy_sum(logits, targets)
    logp = jax.nn.log_softmax(logits)
    expected = -(logp[0, 0, 1] + logp[0, 2, 2] + logp[1, 2, 4])
    assert float(n) == 3
    np.testing.assert_allclose(s, expected, rtol=1e-6)


def test_gradient_accumulation_equals_one_big_batch():
    batches = [random_batch(s, B=8) for s in range(3)]
    for b in batches:  # uneven counted tokens across micro-batches
        b["targets"][:2, 5:] = IGNORE
    oc = OptimConfig(lr=1e-3, warmup_steps=1, decay_steps=5)
    big, big_losses = run(CFG, oc, batches)
    acc, acc_losses = run(CFG, oc, batches, grad_accum=4)
    np.testing.assert_allclose(acc_losses, big_losses, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(acc.params), jax.tree.leaves(big.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("max_norm", [0.05, 1e3], ids=["clipped", "not-clipped"])
def test_clip_and_train_step_equal_optax_clip_by_global_norm(max_norm):
    """Ours scales by one factor (and takes the step's norm); the values are optax's."""
    grads = {"w": jax.random.normal(jax.random.key(0), (5, 3)), "b": jnp.arange(3.0)}
    want, _ = optax.clip_by_global_norm(max_norm).update(grads, optax.EmptyState())
    clip = clip_by_global_norm(max_norm)
    for given in ({}, {"grad_norm": optax.tree.norm(grads)}):
        got, _ = clip.update(grads, clip.init(grads), **given)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6)

    # the train step hands its norm to the clip: one SGD step of rate 1 moves the parameters by
    # minus the clipped mean gradient
    oc = OptimConfig(grad_clip=max_norm)
    params, batch = init_params(CFG, jax.random.key(0)), random_batch(0)
    sgd = optax.chain(clip, optax.sgd(1.0))
    step = jax.jit(make_train_step(lm_loss(CFG), sgd, oc))
    state, metrics = step(init_state(params, sgd, jax.random.key(1)), batch)
    loss = lambda p: jnp.divide(*lm_loss(CFG)(p, batch, jax.random.key(0), True))  # no dropout
    mean = jax.jit(jax.grad(loss))(params)
    want, _ = jax.jit(optax.clip_by_global_norm(max_norm).update)(mean, optax.EmptyState())
    np.testing.assert_allclose(metrics["grad_norm"], optax.tree.norm(mean), rtol=1e-5)
    leaves = (jax.tree.leaves(jax.device_get(t)) for t in (params, state.params, want))
    for p, a, b in zip(*leaves, strict=True):
        np.testing.assert_allclose(p - a, b, rtol=1e-4, atol=2e-7)  # p - a: rounded at |p| <= 1


def test_weight_decay_only_on_matrices():
    oc = OptimConfig(lr=1.0, weight_decay=0.5, grad_clip=None)
    opt = make_optimizer(oc)
    params = {"w": jnp.ones((2, 2)), "b": jnp.ones((2,))}
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = opt.update(zeros, opt.init(params), params)
    np.testing.assert_allclose(updates["w"], -0.5)
    np.testing.assert_allclose(updates["b"], 0.0)


def test_warmup_trains_from_step_1_then_cosine():
    sched = lr_schedule(OptimConfig(lr=1.0, warmup_steps=10, decay_steps=110, min_lr_ratio=0.1))
    # sched(count): the rate of step count + 1; step s of warmup trains at lr * s / warmup.
    np.testing.assert_allclose([sched(c) for c in range(10)], np.arange(1, 11) / 10, rtol=1e-6)
    np.testing.assert_allclose(sched(10), 1.0)
    np.testing.assert_allclose(sched(60), 0.55, rtol=1e-5)
    np.testing.assert_allclose(sched(110), 0.1, rtol=1e-5)
    # optax's joined schedules give the values of the hand-written formula, for any warmup
    for W, total, ratio in [(1, 20, 0.0), (4, 24, 1.0), (7, 0, 0.1), (0, 50, 0.1)]:
        oc = OptimConfig(lr=3e-4, warmup_steps=W, decay_steps=total, min_lr_ratio=ratio)
        got = [lr_schedule(oc)(c) for c in range(60)]
        np.testing.assert_allclose(got, [formula(oc, c) for c in range(60)], rtol=1e-6, atol=1e-10)


def formula(oc: OptimConfig, count: int) -> float:
    """The rate of step count + 1 as written before optax's schedules were joined."""
    W, lr = oc.warmup_steps, oc.lr
    if count < W:
        return lr * (count + 1) / W
    if oc.decay_steps <= W:
        return lr
    progress = min(count - W, oc.decay_steps - W) / (oc.decay_steps - W)
    return lr * (oc.min_lr_ratio + (1 - oc.min_lr_ratio) * 0.5 * (1 + np.cos(np.pi * progress)))


def test_eval_step_is_deterministic_mean():
    cfg = GPTConfig(**{**CFG.to_dict(), "drop_rate": 0.5})
    params = init_params(cfg, jax.random.key(0))
    m = jax.jit(make_eval_step(cfg))(params, random_batch(1))
    assert float(m["tokens"]) == 64
    assert 4.0 < float(m["loss"]) / 64 < 5.0  # about ln(89) = 4.49 at init


def test_matches_pytorch_adamw_for_20_steps(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from convert import from_hf

    torch.manual_seed(0)
    sizes = dict(vocab_size=89, n_positions=16, n_embd=32, n_layer=2, n_head=4)
    config = transformers.GPT2Config(**sizes, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = transformers.GPT2LMHeadModel(config)
    model.save_pretrained(tmp_path)
    cfg, params = from_hf(tmp_path)
    cfg = GPTConfig(**{**cfg.to_dict(), "drop_rate": 0.0})
    batches = [random_batch(s) for s in range(20)]
    oc = OptimConfig(lr=1e-3, weight_decay=0.1, grad_clip=None)
    _, ours = run(cfg, oc, batches, params=jax.tree.map(jnp.asarray, params))

    # torch's AdamW decays every tensor it is given: the same >= 2-D split as ours.
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optim = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}], lr=1e-3
    )
    theirs = []
    for b in batches:
        x, y = (torch.tensor(b[k]).long() for k in ("inputs", "targets"))
        loss = torch.nn.functional.cross_entropy(model(x).logits.flatten(0, 1), y.flatten())
        optim.zero_grad()
        loss.backward()
        optim.step()
        theirs.append(loss.item())
    np.testing.assert_allclose(ours, theirs, rtol=1e-4)


def test_bfloat16_steps_keep_float32_master_params():
    oc = OptimConfig(lr=3e-3)
    opt = make_optimizer(oc)
    state = init_state(init_params(CFG, jax.random.key(0)), opt, jax.random.key(1))
    step = jax.jit(make_train_step(lm_loss(CFG, jnp.bfloat16), opt, oc))
    batch, losses = random_batch(0), []
    for _ in range(6):
        state, m = step(state, batch)
        losses.append(float(m["loss"]))
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(state.params))
    assert m["loss"].dtype == jnp.float32 and losses[-1] < losses[0] - 0.3


def test_sliced_cross_entropy_equals_the_whole():
    params, batch = init_params(CFG, jax.random.key(0)), random_batch(5)
    batch["targets"][0, :3] = IGNORE
    summed = lambda **kw: lambda p: lm_loss(CFG, **kw)(p, batch, None, False)[0]
    want, want_g = jax.jit(jax.value_and_grad(summed()))(params)
    got, got_g = jax.jit(jax.value_and_grad(summed(ce_chunks=4)))(params)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(jax.jit(summed(ce_chunks=4))(params), want, rtol=1e-6)  # eval
    for a, b in zip(jax.tree.leaves(got_g), jax.tree.leaves(want_g), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    # a frozen head (wte a constant, as in LoRA): no head gradient made, the rest unchanged
    rest = {k: v for k, v in params.items() if k != "wte"}
    frozen = lambda **kw: lambda r: summed(**kw)({**r, "wte": params["wte"]})
    for a, b in zip(
        jax.tree.leaves(jax.jit(jax.grad(frozen(ce_chunks=2)))(rest)),
        jax.tree.leaves(jax.jit(jax.grad(frozen()))(rest)),
        strict=True,
    ):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="ce_chunks 5 must divide the sequence length 16"):
        lm_loss(CFG, ce_chunks=5)(params, batch, None, False)


def test_cross_entropy_chunks_keep_logits_under_the_budget():
    # 8 rows x 1024 tokens x 50,304 padded columns x 4 bytes = 1.54 GiB: two slices of 1 GiB
    assert ce_chunks_for(8, 1024, 50257, 768, budget=2**30) == 2
    assert ce_chunks_for(1, 128, 50257, 768, budget=2**30) == 1
    assert ce_chunks_for(64, 1024, 50257, 8, budget=2**20) == 1024  # never more than T
    # at 32 MiB: 4 x 128 x 50,304 x 4 = 98 MiB of logits; sliced in 4 at D 128, but not at
    # D 768, where each slice would re-add a 147 MiB head gradient
    assert ce_chunks_for(4, 128, 50257, 128, budget=2**25) == 4
    assert ce_chunks_for(4, 128, 50257, 768, budget=2**25) == 1
    # the policy's budgets: 1 GiB, 32 MiB for bf16 on an AMX CPU
    assert ce_chunks_for(4, 128, 50257, 128, Kernels().ce_budget) == 1
    amx = defaults("cpu", jnp.bfloat16, frozenset({"amx_bf16"}))
    assert ce_chunks_for(4, 128, 50257, 128, amx.ce_budget) == 4


def test_muon_orthogonalises_the_blocks_matrices_and_keeps_frozen_leaves():
    """One Muon step moves each hidden matrix by lr x an (almost) orthogonal matrix, scaled by
    sqrt(max(1, out/in)); embeddings go by AdamW; frozen leaves stay bit for bit; it learns."""
    oc = OptimConfig(lr=3e-3, optimizer="muon", muon_lr=0.05, grad_clip=None, weight_decay=0.0)
    opt = make_optimizer(oc)
    params = init_params(CFG, jax.random.key(0))
    frozen = lambda path: not path.startswith("h_0/")
    state = init_state(params, opt, jax.random.key(1), trainable=frozen)
    step = jax.jit(make_train_step(lm_loss(CFG), opt, oc, trainable=frozen))
    batch, losses = random_batch(0), []
    new, m = step(state, batch)
    moved = new.params["h_1"]["mlp"]["c_fc"]["kernel"] - params["h_1"]["mlp"]["c_fc"]["kernel"]
    sv = np.linalg.svd(np.asarray(moved), compute_uv=False) / (0.05 * np.sqrt(128 / 32))
    # Newton-Schulz's near-orthogonal update; LayerNorm's zero-mean inputs leave the gradient,
    # and so the update, one rank short of D.
    assert sv[:-1].min() > 0.5 and sv.max() < 1.5 and sv[-1] < 1e-3, sv
    assert jax.tree.all(jax.tree.map(jnp.array_equal, new.params["h_0"], params["h_0"]))
    for _ in range(8):
        state, m = step(state, batch)
        losses.append(float(m["loss"]))
    assert losses[-1] < losses[0] - 0.5
