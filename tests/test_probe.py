"""Looking inside: every hook point by TransformerLens's name and shape, equal to
TransformerLens's own `run_with_cache` on the same Hugging Face weights; interventions as pure
functions (a head ablated as TransformerLens ablates it, a gradient with respect to an
activation, vmap); and hook points that cost the plain forward nothing."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gptjax import GPTConfig, init_params
from gptjax.kernels import Kernels
from gptjax.model import attention, gpt
from gptjax.model.gpt import GPT
from gptjax.probe import hook_names, run_with_cache, run_with_hooks

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformer_lens = pytest.importorskip("transformer_lens")

# TransformerLens 3 says HookedTransformer goes in 4.0; it is what SAELens and users run today.
pytestmark = pytest.mark.filterwarnings("ignore:HookedTransformer is deprecated")

TOKENS = np.array([[5, 17, 3, 99, 42, 7, 7, 64], [1, 2, 3, 4, 5, 6, 7, 8]], np.int32)


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    """A small random GPT-2 as transformers writes it, read by gptjax's converter and by
    TransformerLens's own GPT-2 weight converter (no LayerNorm folding, no centering)."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions.gpt2 import convert_gpt2_weights

    from convert import from_hf

    torch.manual_seed(0)
    hf_cfg = transformers.GPT2Config(
        vocab_size=128, n_positions=16, n_embd=32, n_layer=2, n_head=4, resid_pdrop=0.0
    )
    hf = transformers.GPT2LMHeadModel(hf_cfg).eval()
    folder = tmp_path_factory.mktemp("probe") / "hf"
    hf.save_pretrained(folder)
    cfg, params = from_hf(folder)
    tl_cfg = HookedTransformerConfig(
        n_layers=2, d_model=32, n_ctx=16, d_head=8, n_heads=4, d_mlp=128, d_vocab=128,
        act_fn="gelu_new", normalization_type="LN", eps=1e-5, positional_embedding_type="standard",
        original_architecture="GPT2LMHeadModel", default_prepend_bos=False, device="cpu",
    )  # fmt: skip
    tl = HookedTransformer(tl_cfg)
    state = convert_gpt2_weights(hf, tl_cfg)
    tl.load_and_process_state_dict(
        state, fold_ln=False, center_writing_weights=False, center_unembed=False,
        fold_value_biases=False,
    )  # fmt: skip
    return cfg, params, tl.eval()


def test_every_hook_equals_transformer_lens_on_the_same_weights(gpt2):
    cfg, params, tl = gpt2
    logits, cache = jax.jit(lambda p, t: run_with_cache(cfg, p, t))(params, TOKENS)
    with torch.no_grad():
        tl_logits, tl_cache = tl.run_with_cache(torch.tensor(TOKENS, dtype=torch.long))
    np.testing.assert_allclose(logits, tl_logits.numpy(), atol=1e-4)
    shared = [name for name in cache if name in tl_cache]
    assert set(cache) <= set(tl_cache) and len(shared) == len(hook_names(cfg)) == 2 + 17 * 2 + 2
    for name in shared:
        ours, theirs = np.asarray(cache[name]), tl_cache[name].numpy()
        assert ours.shape == theirs.shape, name
        np.testing.assert_allclose(ours, theirs, atol=1e-4, err_msg=name)  # -inf where masked


def test_names_keep_only_what_is_asked_and_switches_drop_their_points():
    # every switch of the modern recipe
    modern = dict(position="rotary", norm="rmsnorm", qk_norm=True, activation="relu2", window=4)
    modern |= dict(logit_softcap=15.0, qkv_bias=False, tie_embeddings=False)
    cfg = GPTConfig.preset("nano", **modern)
    params = init_params(cfg, jax.random.key(0))
    logits, everything = run_with_cache(cfg, params, TOKENS)
    np.testing.assert_allclose(
        logits, GPT(cfg, kernels=Kernels()).apply({"params": params}, TOKENS), atol=1e-5
    )
    assert list(everything) == hook_names(cfg)
    names = hook_names(cfg)
    assert "hook_pos_embed" not in names and "blocks.1.attn.hook_rot_q" in names
    assert names[:3] == ["hook_embed", "blocks.0.hook_resid_pre", "blocks.0.ln1.hook_scale"]
    _, cache = run_with_cache(cfg, params, TOKENS, ["blocks.1.attn.hook_pattern"])
    assert list(cache) == ["blocks.1.attn.hook_pattern"] and cache[
        "blocks.1.attn.hook_pattern"
    ].shape == (2, cfg.n_heads, 8, 8)
    _, cache = run_with_cache(cfg, params, TOKENS, lambda n: n.endswith("hook_scale"))
    assert len(cache) == 2 * 2 + 1 and all(v.shape == (2, 8, 1) for v in cache.values())
    # a jitted function returns only what it keeps
    out = jax.jit(lambda p: run_with_cache(cfg, p, TOKENS, ["hook_embed"])[1]).lower(params)
    assert len(out.out_info) == 1
    with pytest.raises(ValueError, match="no hook point 'blocks.9.hook_z'"):
        run_with_hooks(cfg, params, TOKENS, {"blocks.9.hook_z": lambda x, hook: x})


def test_a_zero_ablated_head_gives_transformer_lens_logits(gpt2):
    cfg, params, tl = gpt2

    def ablate(z, hook):
        assert hook.name == "blocks.1.attn.hook_z"
        return z.at[:, :, 2].set(0.0)

    ours = run_with_hooks(cfg, params, TOKENS, {"blocks.1.attn.hook_z": ablate})

    def tl_ablate(z, hook):
        z[:, :, 2] = 0.0
        return z

    with torch.no_grad():
        theirs = tl.run_with_hooks(
            torch.tensor(TOKENS, dtype=torch.long), fwd_hooks=[("blocks.1.attn.hook_z", tl_ablate)]
        )
    np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-4)
    assert not np.allclose(ours, run_with_hooks(cfg, params, TOKENS, {}), atol=1e-3)


def test_interventions_are_pure_jittable_vmappable_and_differentiable(gpt2):
    cfg, params, _ = gpt2
    name = "blocks.0.hook_resid_post"

    def logit_of_7(delta):
        add = {name: lambda x, hook: x + delta}
        return run_with_hooks(cfg, params, TOKENS, add)[0, -1, 7]

    # attribution patching is one jax.grad: d logit / d activation, checked by a finite step
    zero = jnp.zeros((2, 8, cfg.emb_dim))
    grad = jax.jit(jax.grad(logit_of_7))(zero)
    assert grad.shape == zero.shape and float(jnp.abs(grad[1]).max()) == 0.0  # other row
    assert float(jnp.abs(grad[0, :, :]).max()) > 0
    step = 1e-2 * grad / jnp.linalg.norm(grad)
    moved = logit_of_7(step) - logit_of_7(zero)
    np.testing.assert_allclose(moved, jnp.sum(grad * step), rtol=0.05)
    # patching from another prompt's cache, vmapped over scales of the patch
    _, clean = run_with_cache(cfg, params, TOKENS[::-1], [name])
    mix = lambda a: run_with_hooks(
        cfg, params, TOKENS, {name: lambda x, hook: (1 - a) * x + a * clean[name]}
    )
    both = jax.vmap(mix)(jnp.array([0.0, 1.0]))
    np.testing.assert_allclose(both[0], run_with_hooks(cfg, params, TOKENS, {}), atol=1e-5)
    patched_all = run_with_hooks(cfg, params, TOKENS[::-1], {})
    np.testing.assert_allclose(both[1], patched_all, atol=1e-4)  # the whole stream: the other


def _program(fn, *args) -> str:
    """The compiled program's text without metadata (source lines, names of Python frames)."""
    text = jax.jit(fn).lower(*args).compile().as_text()
    text = text[text.index("HloModule") :]
    lines = [line for line in text.splitlines() if not re.match(r"^\s*\d+ ", line)]
    lines = [line for line in lines if line not in ("FileNames", "FunctionNames")]
    lines = [line for line in lines if line not in ("FileLocations", "StackFrames")]
    return re.sub(r",? ?(metadata=\{[^}]*\}|stack_frame_id=\d+)", "", "\n".join(lines))


@pytest.mark.parametrize("switches", [{}, {"position": "rotary", "norm": "rmsnorm"}])
def test_hook_points_cost_the_plain_forward_nothing(monkeypatch, switches):
    cfg = GPTConfig.preset("nano", **switches)
    params = init_params(cfg, jax.random.key(0))
    # a new function each time (jit reuses the trace of the same one)
    loss = lambda q: GPT(cfg, kernels=Kernels()).apply({"params": q}, TOKENS).sum()
    step = lambda: lambda p: jax.grad(loss)(p)
    with_points = _program(step(), params)
    # the same model with every hook point taken out of the code
    for module in (gpt, attention):
        monkeypatch.setattr(module, "hook", lambda name, x: x)
    monkeypatch.setattr(gpt, "inverse_scale", jax.lax.rsqrt)
    monkeypatch.setattr(attention, "hooked_softmax", attention.masked_softmax)
    assert _program(step(), params) == with_points


@pytest.mark.parametrize("switches", [{}, {"norm": "rmsnorm", "logit_softcap": None}])
def test_the_analyses_add_up(tmp_path, switches):
    from gptjax.probe import analyses

    cfg = GPTConfig.preset("nano", **switches)
    params = jax.tree.map(lambda x: 3.0 * x, init_params(cfg, jax.random.key(0)))  # peakier
    forward = jax.jit(lambda p, tokens: run_with_hooks(cfg, p, tokens, {}))  # one compile
    logits = forward(params, TOKENS)
    # the logit lens's last reading is the model's own logits
    lens = jax.jit(lambda p: analyses.logit_lens(cfg, p, TOKENS))(params)
    assert lens.shape == (cfg.n_layers + 1, 2, 8, cfg.vocab_size)
    np.testing.assert_allclose(lens[-1], logits, atol=1e-4)
    # direct logit attribution: the parts add up to the logit of the token that came next
    target = jnp.roll(TOKENS, -1, axis=1)
    parts = jax.jit(lambda p: analyses.component_logits(cfg, p, TOKENS, target))(params)
    assert parts["heads"].shape == (cfg.n_layers, cfg.n_heads, 2, 8)
    total = parts["embed"] + parts["heads"].sum((0, 1)) + parts["attn_bias"].sum(0)
    total += parts["mlp"].sum(0) + parts["rest"]
    want = jnp.take_along_axis(logits, target[..., None], -1)[..., 0]
    np.testing.assert_allclose(total, want, atol=2e-4)
    # patching block 0's input at one position is running the corrupt prompt with that token
    corrupt = TOKENS.copy()
    corrupt[:, 3] = [11, 12]
    metric = lambda lg: lg[:, -1, 7].sum()
    grid = jax.jit(lambda p: analyses.patch_positions(cfg, p, TOKENS, corrupt, metric))(params)
    assert grid.shape == (cfg.n_layers, 8)
    np.testing.assert_allclose(grid[0, 3], metric(logits), rtol=1e-4)
    np.testing.assert_allclose(grid[0, 5], metric(forward(params, corrupt)), rtol=1e-4)
    heads = jax.jit(lambda p: analyses.patch_heads(cfg, p, TOKENS, TOKENS, metric))(params)
    np.testing.assert_allclose(heads, jnp.full(heads.shape, metric(logits)), rtol=1e-4)
    scores = analyses.induction_scores(cfg, params, jax.random.key(2), batch=2, half=6)
    assert scores.shape == (cfg.n_layers, cfg.n_heads) and bool(
        jnp.all((scores >= 0) & (scores <= 1))
    )
    png = analyses.heatmap(grid, tmp_path / "patch.png", xlabel="position", ylabel="layer")
    assert png.stat().st_size > 1000
