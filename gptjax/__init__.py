"""gptjax: GPT-2 rebuilt from scratch as pure-functional JAX."""

from gptjax.config import GPTConfig
from gptjax.generation import generate
from gptjax.model import GPT, count_params, init_params

__all__ = ["GPT", "GPTConfig", "count_params", "generate", "init_params"]
