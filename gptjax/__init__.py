"""gptjax: GPT-2 rebuilt from scratch as pure-functional JAX."""

from gptjax import (
    accelerator,  # first: it may set XLA_FLAGS before any backend starts
    heap,  # nothing on import: `heap.keep()` is the caller's choice
)
from gptjax.config import GPTConfig
from gptjax.data import instruct, textdata, tokenizer
from gptjax.inference.generation import generate
from gptjax.kernels import Kernels
from gptjax.model import classifier, lora
from gptjax.model.classifier import GPTClassifier, init_classifier
from gptjax.model.gpt import GPT
from gptjax.model.params import count_params, init_params
from gptjax.store import Model
from gptjax.training import dpo, finetune

__all__ = [
    "GPT",
    "GPTClassifier",
    "GPTConfig",
    "Kernels",
    "Model",
    "accelerator",
    "classifier",
    "count_params",
    "dpo",
    "finetune",
    "generate",
    "heap",
    "init_classifier",
    "init_params",
    "instruct",
    "lora",
    "textdata",
    "tokenizer",
]
