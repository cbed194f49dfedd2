"""Evaluation beyond the loss: HellaSwag (`hellaswag`) and lm-evaluation-harness (`harness`)."""
