"""The training tasks the scripts run through the one loop (`training.loop.run`): pretraining,
classification, instruction finetuning, DPO and RL, each with its options dataclass. A script
(`train/X.py`) only parses the options and hands the task to the loop."""
