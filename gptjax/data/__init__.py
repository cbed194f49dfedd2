"""Data: the GPT-2 tokenizer, sliding windows, token files and llm.c shards, corpus documents,
labelled texts, instruction and preference data, and the download cache they are fetched into."""

IGNORE = -100  # a target that counts for nothing (PyTorch's ignore_index): padding, prompts
