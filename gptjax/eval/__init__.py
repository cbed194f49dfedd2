"""Evaluation: batched loss and accuracy over every device (`evaluator`) and HellaSwag."""
