"""Weight converters between OpenAI / Hugging Face / PEFT checkpoints and gptjax parameter trees:
the command line (`python -m convert`) over the readers and writers of `gptjax.store`."""

from gptjax.store.hf import from_hf, hf_labels, to_hf
from gptjax.store.openai import from_openai
from gptjax.store.peft import from_peft, peft_modules, to_peft

__all__ = ["from_hf", "from_openai", "from_peft", "hf_labels", "peft_modules", "to_hf", "to_peft"]
