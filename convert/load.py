"""Open any GPT-2 folder: gptjax model or run, Hugging Face (LM or classifier), OpenAI."""

from __future__ import annotations

from pathlib import Path

from convert.hf import from_hf
from convert.openai import from_openai
from gptjax import checkpoint
from gptjax.config import GPTConfig


def load_model(directory: str | Path) -> tuple[GPTConfig, dict]:
    """(cfg, params) from a gptjax model directory, a training run directory (its latest
    checkpoint), a Hugging Face GPT-2 folder or an OpenAI GPT-2 folder."""
    directory = Path(directory).absolute()
    if (directory / "model.safetensors").is_file():
        return from_hf(directory)
    if (directory / "hparams.json").is_file():
        return from_openai(directory)
    return checkpoint.load_model(directory)
