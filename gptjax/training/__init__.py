"""Training: the state, optimizer and pure steps (`steps`), losses (`cross_entropy`, `dpo`), what
trains (`finetune`), parallelism, sums over eval batches (`evaluator`), and the one loop (`loop`)
with the base of its tasks (`task`), run log, stop/lock guard, FLOPs, profile and plots."""

from gptjax.training.steps import (
    OptimConfig,
    TrainState,
    init_state,
    lm_loss,
    loss_sum,
    make_eval_step,
    make_optimizer,
    make_train_step,
)

__all__ = [
    "OptimConfig",
    "TrainState",
    "init_state",
    "lm_loss",
    "loss_sum",
    "make_eval_step",
    "make_optimizer",
    "make_train_step",
]
