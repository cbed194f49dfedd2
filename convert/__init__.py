"""Weight converters between OpenAI / Hugging Face GPT-2 checkpoints and gptjax parameter trees."""

from convert.hf import from_hf, to_hf

__all__ = ["from_hf", "to_hf"]
