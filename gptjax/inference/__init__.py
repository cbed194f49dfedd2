"""Inference: KV-cache generation (`generation`), the continuous-batching engine (`engine`), and
the OpenAI-compatible server (`server`, `openai_api`, `stream`) with its page."""
