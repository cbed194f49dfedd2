"""Models on disk: the one model record (`Model`: config, params and what the model is for), whose
`open` reads every folder gptjax knows and whose `save` writes gptjax's own; and the formats of
others, read and written here so that scripts and converters share them: Hugging Face (`hf`),
OpenAI's TensorFlow checkpoints (`openai`, `tf_bundle`), PEFT adapters (`peft`) and the name map
between them (`names`)."""

from gptjax.store.record import KINDS, Model, open_or_preset

__all__ = ["KINDS", "Model", "open_or_preset"]
