"""Hugging Face GPT-2 folders (`config.json` + `model.safetensors`) to and from our tree:
`GPT2LMHeadModel` for language models, `GPT2ForSequenceClassification` for classifiers (its
`score.weight` [C, D] is our `score/kernel` [D, C]). Exported folders also carry GPT-2's
tokenizer and generation settings, so transformers (and lm-eval's `hf` model) need nothing else."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import jax.numpy as jnp
from safetensors import safe_open

from gptjax.config import GPTConfig
from gptjax.data import bpe, chat
from gptjax.data.tokenizer import EOT_ID, bpe_files, has_eot, hf_tokenizer_config
from gptjax.files import atomic_dir, write_json
from gptjax.store.names import assemble, rows

# Causal-mask buffers that older transformers versions saved beside the weights.
_BUFFER = re.compile(r"h\.\d+\.attn\.(bias|masked_bias)$")


def _folder(path: str | Path) -> Path:
    path = Path(path)
    folder = path.parent if path.is_file() else path
    for name in ("config.json", "model.safetensors"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name}: missing (not a Hugging Face GPT-2 folder?)")
    return folder


# Our activations as transformers' ACT2FN names: GPT2's `activation_function` takes either.
HF_ACTIVATIONS = {"gelu": "gelu_new", "relu2": "relu2"}
# The switches Hugging Face's GPT-2 can hold: zero qkv biases, an untied head, the activation.
HF_EXPRESSES = ("qkv_bias", "tie_embeddings", "activation")


def config_from_hf(hf: dict, source: str) -> GPTConfig:
    """Our GPTConfig from a Hugging Face GPT2Config dict."""
    act = hf.get("activation_function", "gelu_new")
    if act not in (*HF_ACTIVATIONS.values(), "gelu_pytorch_tanh"):
        raise ValueError(
            f"{source}: activation_function {act!r} is neither GPT-2's tanh GELU nor relu2"
        )
    if abs(hf.get("layer_norm_epsilon", 1e-5) - 1e-5) > 1e-12:
        raise ValueError(f"{source}: layer_norm_epsilon must be 1e-5 for GPT-2")
    try:
        return GPTConfig(
            vocab_size=hf["vocab_size"],
            context_length=hf["n_positions"],
            emb_dim=hf["n_embd"],
            n_heads=hf["n_head"],
            n_layers=hf["n_layer"],
            drop_rate=hf.get("resid_pdrop", 0.1),
            qkv_bias=True,
            tie_embeddings=hf.get("tie_word_embeddings", True),
            activation="relu2" if act == "relu2" else "gelu",
        )
    except KeyError as e:
        raise ValueError(f"{source}: missing field {e.args[0]}") from None


def _read_config(folder: Path) -> dict:
    cfg_file = folder / "config.json"
    try:
        hf = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{cfg_file}: not valid JSON ({e})") from None
    if not isinstance(hf, dict):
        raise ValueError(f"{cfg_file}: not a JSON object")
    return hf


def from_hf(path: str | Path, *, progress: bool = False) -> tuple[GPTConfig, dict]:
    """Read a Hugging Face GPT-2 folder; return (config, params) with float32 params.

    Tensor names may carry the `transformer.` prefix or not; causal-mask buffers are ignored.
    A `GPT2ForSequenceClassification` folder's params also hold `score/kernel` [D, C] (labels:
    `hf_labels`). Tensors are read one at a time, so peak memory stays near the weights' size.
    """
    folder = _folder(path)
    cfg = config_from_hf(_read_config(folder), str(folder / "config.json"))
    ours = {hf_name: our for our, hf_name, _ in rows(cfg)}
    weights = folder / "model.safetensors"
    score = {}

    def tensors():
        with safe_open(str(weights), framework="numpy") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                name = key.removeprefix("transformer.")
                if name == "score.weight":
                    score["kernel"] = f.get_tensor(key).T  # Linear [C, D] -> Dense [D, C]
                elif not _BUFFER.match(name) and not (
                    name == "lm_head.weight" and cfg.tie_embeddings
                ):
                    yield ours.get(name, name), f.get_tensor(key)

    try:
        params = assemble(cfg, tensors(), str(weights), progress)
    except Exception as e:
        if isinstance(e, ValueError):
            raise
        raise ValueError(f"{weights}: unreadable safetensors file ({e})") from None
    if score:
        params["score"] = {"kernel": jnp.asarray(score["kernel"], jnp.float32)}
    return cfg, params


def hf_labels(path: str | Path) -> dict | None:
    """A classifier folder's {"labels": [names by class index], "pad_id"}, or None for a
    language model."""
    folder = _folder(path)
    hf = _read_config(folder)
    archs = hf.get("architectures") or []
    if "GPT2ForSequenceClassification" not in archs and "id2label" not in hf:
        return None
    id2label = hf.get("id2label") or {str(i): f"LABEL_{i}" for i in range(hf.get("num_labels", 2))}
    labels = [id2label[k] for k in sorted(id2label, key=int)]
    return {"labels": labels, "pad_id": hf.get("pad_token_id", 50256)}


def to_hf(
    cfg: GPTConfig,
    params,
    out_dir: str | Path,
    *,
    labels=None,
    pad_id: int = EOT_ID,
    tokenizer=None,
    chat_template: str | None = None,
) -> Path:
    """Write `config.json` + `model.safetensors` that transformers' GPT2LMHeadModel loads, or,
    when params hold a `score`, GPT2ForSequenceClassification (AutoModelForSequenceClassification)
    with `num_labels`, `id2label` (`labels`, default LABEL_i) and `pad_token_id`.

    Written under a temporary name and renamed, so `out_dir` is never half-written. A model
    without qkv biases gets zero biases, which HF's GPT-2 always has; ReLU squared is its
    `relu2`. A model with a switch GPT-2 has no place for (`GPTConfig.switches` beyond
    `HF_EXPRESSES`: rotary positions, RMSNorm, ...) is refused before anything is written.
    `tokenizer`: the model's own (a tiktoken Encoding; None: GPT-2's), written as tokenizer.json
    with `chat_template` (jinja) in tokenizer_config.json, so `AutoTokenizer` and
    `apply_chat_template` give gptjax's ids.
    """
    import numpy as np
    from safetensors.numpy import save_file

    from gptjax.store.names import flatten

    out_dir = Path(out_dir).absolute()
    beyond = {k: v for k, v in cfg.switches().items() if k not in HF_EXPRESSES}
    if beyond:
        named = ", ".join(f"{k}={v!r}" for k, v in beyond.items())
        raise ValueError(f"{out_dir}: Hugging Face's GPT-2 cannot express {named}; not exported")
    flat = dict(flatten(params))
    classifier = "score/kernel" in flat
    arch = dataclasses.replace(cfg, qkv_bias=True, tie_embeddings=cfg.tie_embeddings or classifier)
    tensors = {}
    for our, hf_name, _ in rows(arch):
        default = np.zeros(3 * cfg.emb_dim, np.float32) if our.endswith("c_attn/bias") else None
        value = flat.get(our, default)
        if value is None:
            raise ValueError(f"params: missing {our} for {cfg}")
        prefix = "" if hf_name == "lm_head.weight" else "transformer."
        tensors[prefix + hf_name] = np.ascontiguousarray(np.asarray(value, np.float32))
    config = hf_config(cfg, EOT_ID if tokenizer is None else tokenizer.eot_token)
    if classifier:
        C = flat["score/kernel"].shape[1]
        labels = list(labels) if labels is not None else [f"LABEL_{i}" for i in range(C)]
        if len(labels) != C:
            raise ValueError(f"{len(labels)} labels for a score of {C} classes")
        tensors["score.weight"] = np.ascontiguousarray(np.asarray(flat["score/kernel"]).T)
        config.update(
            architectures=["GPT2ForSequenceClassification"],
            num_labels=C,
            id2label={str(i): n for i, n in enumerate(labels)},
            label2id={n: i for i, n in enumerate(labels)},
            pad_token_id=pad_id,
            tie_word_embeddings=True,
        )
    with atomic_dir(out_dir) as tmp:
        write_json(tmp / "config.json", config)
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        if tokenizer is not None:
            own_tokenizer_files(tmp, tokenizer, cfg.context_length, chat_template)
        elif has_eot(cfg.vocab_size):  # a GPT-2 BPE model (toy vocabularies have none)
            tokenizer_files(tmp, cfg.context_length, pad=classifier)
    return out_dir


def hf_config(cfg: GPTConfig, eot: int | None = EOT_ID) -> dict:
    """transformers' GPT2Config of `cfg`, as config.json holds it; `eot`: its bos and eos id."""
    return {
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "vocab_size": cfg.vocab_size,
        "n_positions": cfg.context_length,
        "n_embd": cfg.emb_dim,
        "n_head": cfg.n_heads,
        "n_layer": cfg.n_layers,
        "resid_pdrop": cfg.drop_rate,
        "embd_pdrop": cfg.drop_rate,
        "attn_pdrop": cfg.drop_rate,
        "layer_norm_epsilon": 1e-5,
        "activation_function": HF_ACTIVATIONS[cfg.activation],
        "tie_word_embeddings": cfg.tie_embeddings,
        "bos_token_id": eot,
        "eos_token_id": eot,
    }


def own_tokenizer_files(folder: Path, enc, context: int, chat_template: str | None) -> None:
    """A tokenizer of the model's own (train.tokenizer, or grown with chat tokens) as
    transformers reads it (tokenizer.json, tokenizer_config.json with the chat template) and as
    gptjax does, and a generation_config.json that also stops at the end of a chat turn."""
    bpe.write_files(enc, folder, context=context, chat_template=chat_template)
    config = bpe.hf_config(enc, context, chat_template)
    special = {k: v for k, v in config.items() if k.endswith("_token")}
    ends = [enc.eot_token] + ([chat.end_id(enc, "chatml")] if chat_template else [])
    generation = {"bos_token_id": enc.eot_token, "eos_token_id": ends if len(ends) > 1 else ends[0]}
    write_json(folder / "special_tokens_map.json", special)
    write_json(folder / "generation_config.json", generation)


def tokenizer_files(folder: Path, context: int, *, pad: bool = False) -> None:
    """GPT-2's tokenizer as transformers reads it: `vocab.json` and `merges.txt` (OpenAI's
    `encoder.json` and `vocab.bpe`, byte for byte, under HF's names), `tokenizer_config.json`
    and `special_tokens_map.json` (<|endoftext|> as bos, eos and unk, and as pad with `pad`;
    `model_max_length` = context), and `generation_config.json`."""
    encoder, merges = bpe_files()
    shutil.copyfile(encoder, folder / "vocab.json")
    shutil.copyfile(merges, folder / "merges.txt")
    tokenizer = hf_tokenizer_config(context, pad=pad)
    special = {k: v for k, v in tokenizer.items() if k.endswith("_token")}
    generation = {"bos_token_id": EOT_ID, "eos_token_id": EOT_ID}
    generation |= {"pad_token_id": EOT_ID} if pad else {}
    for name, obj in [
        ("tokenizer_config.json", tokenizer),
        ("special_tokens_map.json", special),
        ("generation_config.json", generation),
    ]:
        write_json(folder / name, obj)
