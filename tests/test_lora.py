"""LoRA: B = 0 is the base model, merging equals the adapter forward, PEFT reads and writes ours."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from convert import from_hf, from_peft, peft_modules, to_peft
from gptjax import GPT, GPTClassifier, GPTConfig, init_params
from gptjax.model import lora
from gptjax.model.lora import LoRAConfig
from gptjax.model.params import abstract_params

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

CFG = GPTConfig(vocab_size=64, context_length=16, emb_dim=32, n_heads=4, n_layers=2)
LCFG = LoRAConfig(rank=4, alpha=8.0)
IDS = np.random.default_rng(0).integers(0, 64, (2, 16))


def trained(adapters, seed=1):
    """Adapters as after some training: B no longer zero."""
    leaves, tree = jax.tree.flatten(adapters)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(
        tree, [x + 0.1 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)]
    )


def adapter_forward(lcfg, params, adapters, ids):
    """The unmerged LoRA forward: each adapted Dense adds (alpha / r) (x A) B to its output."""

    def add_lora(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        path = context.module.path
        if isinstance(context.module, nn.Dense) and context.method_name == "__call__":
            node = adapters
            for key in path:
                node = node.get(key, {}) if isinstance(node, dict) else {}
            if "lora_a" in node:
                out = out + lcfg.scale * (args[0] @ node["lora_a"]) @ node["lora_b"]
        return out

    with nn.intercept_methods(add_lora):
        return GPT(CFG).apply({"params": params}, ids)


def test_zero_b_is_the_base_model_exactly():
    params = init_params(CFG, jax.random.key(0))
    adapters = lora.init(LCFG, params, jax.random.key(1))
    merged = lora.merge(LCFG, params, adapters)
    base = GPT(CFG).apply({"params": params}, IDS)
    np.testing.assert_array_equal(GPT(CFG).apply({"params": merged}, IDS), base)


def test_merged_weights_equal_the_adapter_forward():
    params = init_params(CFG, jax.random.key(0))
    adapters = trained(lora.init(LCFG, params, jax.random.key(1)))
    merged = jax.jit(lambda p, a: lora.merge(LCFG, p, a))(params, adapters)
    ours = GPT(CFG).apply({"params": merged}, IDS)
    ref = adapter_forward(LCFG, params, adapters, IDS)
    assert np.abs(np.asarray(ours) - np.asarray(ref)).max() < 1e-5
    assert (
        np.abs(np.asarray(ours) - np.asarray(GPT(CFG).apply({"params": params}, IDS))).max() > 1e-3
    )
    # merge is pure: the base tree is untouched
    np.testing.assert_array_equal(
        params["h_0"]["attn"]["c_attn"]["kernel"],
        init_params(CFG, jax.random.key(0))["h_0"]["attn"]["c_attn"]["kernel"],
    )


def test_adapter_shapes_init_and_the_124m_count():
    params = init_params(CFG, jax.random.key(0))
    adapters = lora.init(LCFG, params, jax.random.key(1))
    assert sorted(adapters["h_1"]["attn"]) == ["c_attn", "c_proj"]
    a, b = adapters["h_0"]["mlp"]["c_fc"]["lora_a"], adapters["h_0"]["mlp"]["c_fc"]["lora_b"]
    assert a.shape == (32, 4) and b.shape == (4, 128) and not np.any(b)
    assert 0 < np.abs(a).max() <= 1 / np.sqrt(32)  # PEFT's kaiming-uniform bound
    big = abstract_params(GPTConfig.preset("124M"))
    shapes = jax.eval_shape(lambda: lora.init(LoRAConfig(rank=16), big, jax.random.key(0)))
    assert lora.count(shapes) == 2_359_296
    with pytest.raises(ValueError, match="match no Dense"):
        lora.init(LoRAConfig(targets=("q_proj",)), params, jax.random.key(0))


def hf_lm(tmp_path):
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=64,
        n_positions=16,
        n_embd=32,
        n_head=4,
        n_layer=2,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=None,
        eos_token_id=None,
    )
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(tmp_path / "base")
    return model


def test_to_peft_loads_in_peft_with_the_same_logits(tmp_path):
    model = hf_lm(tmp_path)
    cfg, params = from_hf(tmp_path / "base")
    adapters = trained(lora.init(LCFG, params, jax.random.key(1)))
    to_peft(LCFG, adapters, tmp_path / "adapter")
    pm = peft.PeftModel.from_pretrained(model, tmp_path / "adapter").eval()
    with torch.no_grad():
        ref = pm(torch.tensor(IDS)).logits.numpy()
    ours = GPT(cfg).apply({"params": lora.merge(LCFG, params, adapters)}, IDS)
    assert np.abs(np.asarray(ours) - ref).max() < 1e-4
    lcfg, back = from_peft(tmp_path / "adapter")
    assert lcfg.rank == 4 and lcfg.scale == 2.0
    for x, y in zip(jax.tree.leaves(back), jax.tree.leaves(adapters), strict=True):
        np.testing.assert_array_equal(x, y)


def test_from_peft_reads_a_folder_peft_wrote(tmp_path):
    model = hf_lm(tmp_path)
    cfg, params = from_hf(tmp_path / "base")
    config = peft.LoraConfig(
        r=4,
        lora_alpha=16,
        target_modules=["c_attn", "c_fc"],
        fan_in_fan_out=True,
        init_lora_weights=False,
    )
    pm = peft.get_peft_model(model, config).eval()
    pm.save_pretrained(tmp_path / "theirs")
    with torch.no_grad():
        ref = pm(torch.tensor(IDS)).logits.numpy()
    lcfg, adapters = from_peft(tmp_path / "theirs")
    assert lcfg.targets == ("c_attn", "c_fc") and lcfg.scale == 4.0
    assert sorted(adapters["h_0"]) == ["attn", "mlp"]
    ours = GPT(cfg).apply({"params": lora.merge(lcfg, params, adapters)}, IDS)
    assert np.abs(np.asarray(ours) - ref).max() < 1e-4


def test_classifier_adapter_with_its_head_round_trips_through_peft(tmp_path):
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=64,
        n_positions=16,
        n_embd=32,
        n_head=4,
        n_layer=2,
        num_labels=2,
        pad_token_id=63,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    model = transformers.GPT2ForSequenceClassification(config).eval()
    model.save_pretrained(tmp_path / "base")
    cfg, params = from_hf(tmp_path / "base")
    adapters = trained(lora.init(LCFG, params, jax.random.key(1)))
    score = {"kernel": params["score"]["kernel"] + 0.5}  # a head trained whole
    to_peft(LCFG, adapters, tmp_path / "adapter", modules={"score": score})
    pm = peft.PeftModel.from_pretrained(model, tmp_path / "adapter").eval()
    ids = np.array([[1, 2, 3, 4, 63, 63], [5, 6, 7, 8, 9, 10]])
    with torch.no_grad():
        ref = pm(torch.tensor(ids), attention_mask=torch.tensor((ids != 63).astype(np.int64)))
    merged = {**lora.merge(LCFG, params, adapters), "score": score}
    ours = GPTClassifier(cfg, 2, pad_id=63).apply({"params": merged}, ids)
    assert np.abs(np.asarray(ours) - ref.logits.numpy()).max() < 1e-4
    np.testing.assert_array_equal(
        peft_modules(tmp_path / "adapter")["score"]["kernel"], score["kernel"]
    )
