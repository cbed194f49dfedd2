"""EleutherAI's lm-evaluation-harness on a gptjax model: an `lm_eval` LM computed in JAX.

`loglikelihood` and `loglikelihood_rolling` score rows of tokens in one jitted program per padded
length (rows sorted by length, padded to powers of two, batched over every device), so a task
compiles a handful of programs; `generate_until` decodes greedily with the KV-cache generator
and cuts at the task's stop strings. Contexts are cut from the left to the model's context, as
lm-eval's own `hf` model does. Imported only when evaluating (lm-eval is the `eval` extra).

Shapes: B rows, L padded row length, V vocabulary.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from lm_eval.api.model import LM
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from gptjax.config import GPTConfig
from gptjax.data import chat, tokenizer
from gptjax.data.lengths import LEAST, padded_length
from gptjax.inference.generation import complete_all
from gptjax.model.gpt import GPT
from gptjax.model.head import lm_logits
from gptjax.model.params import output_head
from gptjax.training import parallel
from gptjax.training.cross_entropy import target_logprobs


def score_rows(cfg: GPTConfig, dtype, params, tokens, offset, targets, mask, K: int):
    """Rows left-padded to L (offset [B] pads each): tokens, targets, mask [B, L] -> (sum of
    log p(target) over mask [B], whether every masked target is the argmax [B]). Only the last
    K positions may be masked: the output head, most of a small model's work at V = 50257, runs
    on those alone. float32 log-softmax whatever the compute dtype."""
    x = GPT(cfg, dtype).apply({"params": params}, tokens, offset=offset, head=False)
    head = output_head(cfg, params)
    logits = lm_logits(x[:, -K:], head, dtype, cap=cfg.logit_softcap)  # [B, K, V]
    targets, mask = targets[:, -K:], mask[:, -K:]
    logp = target_logprobs(logits, targets)  # [B, K]
    greedy = (jnp.argmax(logits, -1) == targets) | ~mask
    return jnp.sum(jnp.where(mask, logp, 0.0), -1), jnp.all(greedy, -1)


class GptjaxLM(LM):
    """An lm-eval model over (cfg, params); `batch_size` rows per program call (all devices).

    With `template` "chatml" it is a chat model to lm-eval (`--apply-chat-template`): its
    `apply_chat_template` renders ChatML as the exported folder's jinja template does through
    transformers, special tokens written in a prompt are read as themselves, and a generation
    ends at <|im_end|> or <|endoftext|>, as transformers' generation config says."""

    def __init__(
        self,
        cfg: GPTConfig,
        params,
        *,
        batch_size: int = 16,
        dtype="float32",
        enc=None,
        template: str = "alpaca",
    ):
        """`params` may be None until set (`lm.params = ...`) before an evaluation; `enc`: the
        model's tokenizer (None: GPT-2's); `template`: the model's prompt template."""
        super().__init__()
        self.cfg, self.enc, self.template = cfg, enc or tokenizer.gpt2(), template
        self.eot = self.enc.eot_token
        self.specials = {self.enc.encode_single_token(t) for t in self.enc.special_tokens_set}
        self.ends = {self.eot, chat.end_id(self.enc, template)}
        self.params = None if params is None else jax.device_put(params)
        self.max_length, self.B = cfg.context_length, batch_size
        self.mesh = parallel.make_mesh()
        self.dtype = parallel.compute_dtype(dtype)
        self._score = jax.jit(partial(score_rows, cfg, self.dtype), static_argnames="K")

    def encode(self, text: str) -> list[int]:
        """Special tokens written in `text` are read as themselves, as transformers reads them."""
        return self.enc.encode(text, allowed_special=self.enc.special_tokens_set)

    @property
    def tokenizer_name(self) -> str:
        return f"gptjax-{self.enc.name}"

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        return chat.JINJA if self.template == "chatml" else None

    def apply_chat_template(self, chat_history: list[dict], add_generation_prompt=True) -> str:
        """ChatML text of the messages; without `add_generation_prompt` the last (assistant)
        message is left open to be continued, as transformers' continue_final_message does."""
        if self.template != "chatml":
            raise ValueError(
                f"--apply-chat-template: this model answers in the {self.template} template; "
                "only ChatML models (gptjax instruct --template chatml) have a chat template"
            )
        text = chat.render(chat_history, add_generation_prompt=add_generation_prompt)
        if not add_generation_prompt:
            text = text.removesuffix(f"{chat.IM_END}\n")
        return text

    def _pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """(context ids, continuation ids) as lm-eval's hf model splits them: the context's
        trailing spaces go with the continuation, and the whole is encoded at once."""
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        if not context:
            return [self.eot], self.encode(continuation)
        whole, head = self.encode(context + continuation), self.encode(context)
        return head, whole[len(head) :]

    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        pairs = [self._pair(*r.args) for r in requests]
        return self.score([c + x for c, x in pairs], [len(x) for _, x in pairs])

    def loglikelihood_rolling(self, requests) -> list[float]:
        """Each text's total log-likelihood, in windows of the context (disjoint targets)."""
        rows, counts, owner = [], [], []
        for i, request in enumerate(requests):
            windows = get_rolling_token_windows(
                token_list=self.encode(request.args[0]),
                prefix_token=self.eot,
                max_seq_len=self.max_length,
                context_len=1,
            )
            for context, target in map(make_disjoint_window, windows):
                rows.append(context + target)
                counts.append(len(target))
                owner.append(i)
        totals = np.zeros(len(requests))
        for i, (lp, _) in zip(owner, self.score(rows, counts), strict=True):
            totals[i] += lp
        return totals.tolist()

    def score(self, rows: list[list[int]], counts: list[int]) -> list[tuple[float, bool]]:
        """(log p of the last counts[i] tokens of rows[i], greedy?) for every row; a row is cut
        from the left to the context. Rows are sorted by length and left-padded to a power of
        two, so their targets end together and one (L, K) program serves each batch."""
        L = self.max_length
        rows = [r[-(L + 1) :] for r in rows]
        counts = [min(c, len(r) - 1) for c, r in zip(counts, rows, strict=True)]
        # Rows whose targets take as many head positions (K) together, then by length.
        key = lambda i: (padded_length(counts[i], least=4), len(rows[i]))
        order = sorted(range(len(rows)), key=key)
        pending = []
        for start in range(0, len(order), self.B):
            chunk = order[start : start + self.B]
            P = padded_length(max(len(rows[i]) for i in chunk) - 1, L, least=LEAST)
            K = padded_length(max(counts[i] for i in chunk), P, least=min(4, P))
            local = {k: np.zeros((self.B, P), np.int32) for k in ("t", "g")}
            local |= {"m": np.zeros((self.B, P), bool), "o": np.full((self.B,), P, np.int32)}
            for b, i in enumerate(chunk):
                n = len(rows[i]) - 1
                local["t"][b, P - n :], local["g"][b, P - n :] = rows[i][:-1], rows[i][1:]
                local["m"][b, P - counts[i] :], local["o"][b] = True, P - n
            local["o"][len(chunk) :] = P - 1  # filler rows: one (masked) token each
            local = {k: v[parallel.local_rows(self.B)] for k, v in local.items()}
            g = parallel.global_batch(self.mesh, local, self.B)
            out = self._score(self.params, g["t"], g["o"], g["g"], g["m"], K=K)
            pending.append((chunk, out))
        results: list = [None] * len(rows)
        for chunk, out in jax.device_get(pending):  # one fetch: the calls run back to back
            for b, i in enumerate(chunk):
                results[i] = (float(out[0][b]), bool(out[1][b]))
        return results

    def generate_until(self, requests) -> list[str]:
        """Greedy continuations, cut at the first of each request's stop strings."""
        answers: list = [None] * len(requests)
        groups: dict = {}
        for i, request in enumerate(requests):
            context, kwargs = request.args
            until = kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            n = min(int(kwargs.get("max_gen_toks", 256)), self.max_length - 1)
            groups.setdefault(n, []).append((i, self.encode(context) or [self.eot], until))
        for n, items in groups.items():
            items.sort(key=lambda item: len(item[1]))  # similar lengths batched together
            new = complete_all(
                self.cfg,
                self.params,
                [p for _, p, _ in items],
                max_new_tokens=n,
                batch=self.B,
                eos_id=chat.end_id(self.enc, self.template),
                dtype=self.dtype,
            )
            for (i, _, until), tokens in zip(items, new, strict=True):
                answers[i] = cut(self.decode(tokens), until)
        return answers

    def decode(self, tokens: list[int]) -> str:
        """A generation's text: up to its first end token, special tokens left out (as
        lm-eval's hf model decodes)."""
        end = next((k for k, t in enumerate(tokens) if t in self.ends), len(tokens))
        return self.enc.decode([t for t in tokens[:end] if t not in self.specials])


def cut(text: str, stops: list[str]) -> str:
    """`text` up to (not including) the first of `stops` found in it."""
    ends = [text.find(s) for s in stops if s and s in text]
    return text[: min(ends)] if ends else text


def task_manager(include_path: str | None, names: list[str]):
    """lm-eval's task index, after checking each name is in it: the tasks of `include_path`
    alone when they are all that is asked for (indexing lm-eval's thousands of built-in tasks
    takes seconds), else those and the built-in ones."""
    from lm_eval.tasks import TaskManager

    if include_path is not None:
        if not Path(include_path).is_dir():
            raise ValueError(f"--include-path {include_path}: no such folder")
        own = TaskManager(include_path=include_path, include_defaults=False)
        if set(names) <= set(own.all_tasks):
            return own
    manager = TaskManager(include_path=include_path)
    for name in names:
        if name not in set(manager.all_tasks):
            where = f" (nor in {include_path})" if include_path else ""
            raise ValueError(f"--tasks: unknown lm-eval task '{name}'{where}")
    return manager


class InLoop:
    """lm-eval tasks scored during training: built once per run (data, prompts, few-shot
    examples), then `scores(params)` -> {"harness/<task>/<metric>": value} at each evaluation,
    through one GptjaxLM whose compiled programs serve every evaluation."""

    def __init__(self, cfg: GPTConfig, tasks, *, include_path=None, limit=None, **lm):
        """`tasks`: lm-eval task names; `lm`: GptjaxLM's batch_size and dtype."""
        from lm_eval.tasks import get_task_dict

        names = list(tasks)
        self.task_dict = get_task_dict(names, task_manager(include_path, names))
        self.lm, self.limit = GptjaxLM(cfg, None, **lm), limit

    def metrics(self) -> dict[str, str]:
        """{record key: label} of every metric the tasks declare (a plot panel)."""
        keys = {}
        for name, task in self.task_dict.items():
            for m in getattr(getattr(task, "config", None), "metric_list", None) or []:
                keys[f"harness/{name}/{m['metric']}"] = f"{name} {m['metric']}"
        return keys

    def scores(self, params) -> dict[str, float]:
        from lm_eval.evaluator import evaluate

        self.lm.params = params
        out = evaluate(self.lm, self.task_dict, limit=self.limit, log_samples=False)
        return {
            f"harness/{task}/{metric.split(',')[0]}": float(value)
            for task, values in out["results"].items()
            for metric, value in values.items()
            if isinstance(value, int | float) and "stderr" not in metric
        }
