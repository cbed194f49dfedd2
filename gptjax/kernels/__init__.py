"""Which code runs at each hot spot (`policy.Kernels`, resolved once by `policy.resolve`), and
the CPU kernels it can choose (`cpu`: bf16 layers and attention for AMX, the float32 head;
`fence`: the residual gradient's store). The model's own modules hold GPT-2's plain versions."""

from gptjax.kernels.policy import Kernels, resolve

__all__ = ["Kernels", "resolve"]
