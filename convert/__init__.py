"""Weight converters between OpenAI / Hugging Face / PEFT checkpoints and gptjax parameter trees."""

from convert.hf import from_hf, hf_labels, to_hf
from convert.load import load_model
from convert.openai import from_openai
from convert.peft import from_peft, peft_modules, to_peft

__all__ = [
    "from_hf",
    "from_openai",
    "from_peft",
    "hf_labels",
    "load_model",
    "peft_modules",
    "to_hf",
    "to_peft",
]
