"""`--profile DIR`: a jax.profiler trace of a few steady-state steps.

Open it with TensorBoard's profile plugin (`pip install tensorboard tensorboard-plugin-profile`,
then `tensorboard --logdir DIR`) or load DIR/plugins/profile/*/*.trace.json.gz in Perfetto
(https://ui.perfetto.dev).
"""

from __future__ import annotations

import jax


class StepTrace:
    """Trace steps first .. first + n - 1 (no later than step `end`) into `directory` (None: do
    nothing). Call `before(i)` and `after(i, outputs)` around step i."""

    def __init__(self, directory: str | None, first: int, n: int = 3, end: int | None = None):
        first = first if end is None else max(0, min(first, end - n + 1))
        self.directory, self.first, self.last = directory, first, first + n - 1
        if end is not None:
            self.last = min(self.last, end)
        self.running = False

    def before(self, i: int) -> None:
        if self.directory and i == self.first:
            jax.profiler.start_trace(self.directory)
            self.running = True

    def after(self, i: int, outputs, say=print) -> None:
        if self.running and i == self.last:
            jax.block_until_ready(outputs)  # the traced steps' work, not just their dispatch
            jax.profiler.stop_trace()
            self.running = False
            say(
                f"profile of steps {self.first + 1}-{self.last + 1}: {self.directory} "
                "(see gptjax/profile.py to open it)"
            )
