"""Weight converters between OpenAI / Hugging Face GPT-2 checkpoints and gptjax parameter trees."""

from convert.hf import from_hf, to_hf
from convert.openai import from_openai

__all__ = ["from_hf", "from_openai", "to_hf"]
