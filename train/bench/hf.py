"""The Hugging Face side of `train.bench.speed`: GPT-2 in transformers on PyTorch, with the same
config, on the same device. On a GPU it runs as people tune it: bfloat16 autocast, SDPA
attention, fused AdamW, eagerly and under `torch.compile`. Each function returns a callable
that runs (and waits for) one step or one generation, for the bench to time."""

from __future__ import annotations

import dataclasses

import numpy as np

from gptjax.config import GPTConfig
from gptjax.store.hf import hf_config
from gptjax.training import parallel


def _torch():
    import torch

    return torch


def cuda() -> bool:
    return _torch().cuda.is_available()


def device() -> str:
    torch = _torch()
    return torch.cuda.get_device_name() if cuda() else "cpu"


def variants() -> list[tuple[str, bool]]:
    """(row name, torch.compile?) of each HF configuration timed: compiled only on a GPU."""
    return [("hf-torch", False)] + ([("hf-torch+compile", True)] if cuda() else [])


def model(cfg: GPTConfig):
    import transformers

    _torch().manual_seed(0)
    # the model an export of `cfg` would be (no end token: generation runs to its length)
    exported = hf_config(dataclasses.replace(cfg, drop_rate=0.0), eot=None)
    config = transformers.GPT2Config(**exported)
    config._attn_implementation = "sdpa"  # what from_pretrained picks by default
    return transformers.GPT2LMHeadModel(config).to("cuda" if cuda() else "cpu")


def half(opts) -> bool:
    return parallel.compute_dtype(opts.dtype) != np.float32


def train(cfg: GPTConfig, opts, batch: dict, *, compiled: bool):
    torch = _torch()
    net = model(cfg).train()
    optim = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=0.1, fused=cuda())
    forward = torch.compile(net) if compiled else net
    dev = "cuda" if cuda() else "cpu"
    inputs, targets = (
        torch.tensor(batch[k], dtype=torch.long, device=dev) for k in ("inputs", "targets")
    )

    def run():
        with torch.autocast(dev, dtype=torch.bfloat16, enabled=half(opts)):
            logits = forward(inputs).logits
        loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        optim.step()
        if cuda():
            torch.cuda.synchronize()

    return run


def generate(cfg: GPTConfig, opts, prompt, *, compiled: bool):
    torch = _torch()
    net = model(cfg).eval()
    if half(opts):
        net = net.to(torch.bfloat16)
    # HF's recipe for a compiled decode: a static cache, with which `generate` compiles the
    # forward itself (compiling it by hand as well broke its CUDA graphs, transformers 5.17).
    kw = {"cache_implementation": "static"} if compiled else {}
    ids = torch.tensor(np.asarray(prompt), dtype=torch.long, device=net.device)

    def run():
        with torch.no_grad():
            net.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=opts.new_tokens,
                min_new_tokens=opts.new_tokens,
                do_sample=False,
                use_cache=True,
                pad_token_id=0,
                **kw,
            )
        if cuda():
            torch.cuda.synchronize()

    return run
