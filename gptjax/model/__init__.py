"""The model: GPT-2 (`gpt`), attention step by step (`attention`), the CPU gradient fence
(`fence`), the classifier head (`classifier`) and LoRA adapters (`lora`)."""

from gptjax.model.gpt import GPT
from gptjax.model.params import abstract_params, count_params, init_params

__all__ = ["GPT", "abstract_params", "count_params", "init_params"]
