"""gptjax: GPT-2 rebuilt from scratch as pure-functional JAX."""

from gptjax import classifier, dpo, finetune, instruct, lora, textdata, tokenizer
from gptjax.classifier import GPTClassifier, init_classifier
from gptjax.config import GPTConfig
from gptjax.generation import generate
from gptjax.model import GPT, count_params, init_params

__all__ = [
    "GPT",
    "GPTClassifier",
    "GPTConfig",
    "classifier",
    "count_params",
    "dpo",
    "finetune",
    "generate",
    "init_classifier",
    "init_params",
    "instruct",
    "lora",
    "textdata",
    "tokenizer",
]
