"""Continuous batching: many requests decoded together, one compiled step for all of them.

The engine owns `slots` rows of one KV cache [slots, C, N, H] (C = context_length), each row at
its own position. A request waits in a queue, takes the first free slot at the next step (its
prompt prefilled together with the others admitted at that step, in one call), is decoded with
everyone else in flight by one jitted step, and frees its slot when it ends (end-of-text,
`max_tokens`, or cancelled). A request that asks for log-probs gets, for each token it is
handed (and, on request, each prompt token after the first), the model's raw float32
log-softmax of that token and its top alternatives, whatever the sampling.

Greedy answers equal `gptjax.generate` on the same prompt: each row attends only to its own
cache row, so what else is in flight never changes it. A sampled answer draws its n-th token
with fold_in(fold_in(key(seed), 0), n), as `generate(rng=key(seed))` does.

No HTTP here: `train.serve` puts a web API in front of it. Shapes: K slots, C positions per
slot, P prompt bucket length, V vocabulary.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gptjax.config import GPTConfig
from gptjax.data.lengths import LEAST, padded_length
from gptjax.inference.generation import Sampling, check_fit, next_token, row_keys
from gptjax.model.gpt import GPT, Cache
from gptjax.model.weights import compute_params


class Slots(NamedTuple):
    """The device side of every slot; a plain pytree."""

    cache: Cache  # L KVCaches of [K, C, N, H]
    logits: jax.Array  # [K, V] float32: logits for the token each slot writes next
    pos: jax.Array  # [K] int32: where each slot writes its next token
    count: jax.Array  # [K] int32: tokens each slot has generated
    keys: jax.Array  # [K] keys: the n-th token is drawn with fold_in(keys[k], n)
    temperature: jax.Array  # [K] float32, 0 = greedy
    top_p: jax.Array  # [K] float32, 1 = no nucleus cut


WIDTHS = (1, 5, 20)  # top-alternative counts compiled for; a request's is rounded up to one


class Scored(NamedTuple):
    """One token's log-prob and the most likely tokens at its position (best first)."""

    token: int
    logprob: float
    top_ids: np.ndarray  # [w] int32
    top_logprobs: np.ndarray  # [w] float32


def width(wanted: list[int]) -> int:
    """The compiled top-k width that covers every request's `logprobs` (0 when none asks)."""
    return next(w for w in WIDTHS if w >= max(wanted)) if wanted else 0


def scores(logits, tokens, top: int):
    """[..., V] logits, [...] tokens -> (log-prob of each token [...], top-`top` ids and
    log-probs [..., top]), from the raw float32 log-softmax."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    lp = jnp.take_along_axis(logp, tokens[..., None], axis=-1)[..., 0]
    top_lp, top_ids = jax.lax.top_k(logp, top)
    return lp, top_ids, top_lp


def pick(logits, keys, count, temperature, top_p, *, sample: bool, nucleus: bool):
    """[K, V] -> [K] int32: argmax where temperature is 0, else a draw as `generate` makes it
    (slot k's n-th token with fold_in(keys[k], n))."""
    keys = jax.vmap(jax.random.fold_in)(keys, count)
    sampling = Sampling(greedy=not sample, use_top_p=nucleus)
    return next_token(logits, keys, sampling, temperature, top_p)


@partial(jax.jit, static_argnames=("cfg", "dtype", "sample", "nucleus", "top"), donate_argnums=(2,))
def step(cfg: GPTConfig, params, slots: Slots, *, dtype, sample: bool, nucleus: bool, top: int):
    """Every slot picks its next token and runs it through the model: -> (slots, tokens [K],
    None or (when top > 0) the picked tokens' `scores`)."""
    tok = pick(
        slots.logits,
        slots.keys,
        slots.count,
        slots.temperature,
        slots.top_p,
        sample=sample,
        nucleus=nucleus,
    )
    scored = scores(slots.logits, tok, top) if top else None
    C = slots.cache[0].k.shape[1]
    pos = jnp.minimum(slots.pos, C - 1)  # idle slots run too; keep their writes in bounds
    logits, cache = GPT(cfg, dtype).apply(
        {"params": params}, tok[:, None], cache=slots.cache, pos=pos
    )
    slots = slots._replace(
        cache=cache, logits=logits[:, -1], pos=slots.pos + 1, count=slots.count + 1
    )
    return slots, tok, scored


@partial(jax.jit, static_argnames=("cfg", "dtype", "top"), donate_argnums=(2,))
def admit(
    cfg: GPTConfig,
    params,
    slots: Slots,
    prompts,
    lengths,
    where,
    keys,
    temperature,
    top_p,
    *,
    dtype,
    top: int = 0,
):
    """Prefill prompts [k, P] (row i: lengths[i] tokens, then anything) into slots `where` [k];
    an index of K (no such slot) drops the row. Pads sit after the prompt, where causality
    hides them and the slot's next tokens overwrite them. -> (slots, None or (top > 0) the
    `scores` of prompt tokens 1..P-1 [k, P-1])."""
    k, _ = prompts.shape
    C = slots.cache[0].k.shape[1]
    model = GPT(cfg, dtype)
    logits, cache = model.apply(
        {"params": params}, prompts, cache=model.init_cache(k, C, slots.cache[0].k.dtype), pos=0
    )
    last = logits[jnp.arange(k), lengths - 1]  # [k, V]
    put = lambda full, new: full.at[where].set(new, mode="drop")
    scored = scores(logits[:, :-1], prompts[:, 1:], top) if top else None
    return Slots(
        cache=jax.tree.map(put, slots.cache, cache),
        logits=put(slots.logits, last),
        pos=put(slots.pos, lengths),
        count=put(slots.count, jnp.zeros_like(lengths)),
        keys=put(slots.keys, keys),
        temperature=put(slots.temperature, temperature),
        top_p=put(slots.top_p, top_p),
    ), scored


@dataclass(eq=False)
class Request:
    """One generation. `on_token(token, finish)` is called from the engine's thread for each
    new token (finish None) and once at the end (token None, finish "stop" at end-of-text or
    "length" at max_tokens, "cancelled"); returning False from it cancels the request.

    With `logprobs` (0 to 20 alternatives) the engine appends a `Scored` to `scores` before it
    hands each token on, the end-of-text token included; with `score_prompt` too it sets
    `prompt_scores` (prompt tokens 1.., before any token). max_tokens 0 only prefills."""

    prompt: list[int]
    max_tokens: int
    on_token: Callable[[int | None, str | None], Any]
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    logprobs: int | None = None
    score_prompt: bool = False
    scores: list[Scored] = field(default_factory=list, init=False)
    prompt_scores: list[Scored] = field(default_factory=list, init=False)
    cancelled: bool = field(default=False, init=False)
    generated: int = field(default=0, init=False)
    key: Any = field(default=None, init=False)  # the row key, from seed

    def cancel(self) -> None:
        """Stop at the next step and free the slot (safe from any thread)."""
        self.cancelled = True


class Engine:
    """`slots` concurrent generations over one model; `submit` from any thread.

    Runs its own thread (`start`/`stop`). A step admits every waiting request that has a free
    slot (one prefill call), then decodes one token for every busy slot.
    """

    def __init__(
        self,
        cfg: GPTConfig,
        params,
        *,
        slots: int = 8,
        eos_id: int | None = None,
        dtype=jnp.float32,
    ):
        if slots < 1:
            raise ValueError(f"slots must be at least 1, got {slots}")
        self.cfg, self.params, self.dtype = cfg, compute_params(params, dtype), dtype
        self.eos_id = -1 if eos_id is None else eos_id
        self.busy: list[Request | None] = [None] * slots
        self.waiting: queue.Queue[Request] = queue.Queue()
        self.slots = self._empty(slots)
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._running = False
        self.error: BaseException | None = None
        self.ready = threading.Event()  # set once the first programs are compiled

    def _empty(self, K: int) -> Slots:
        cache = GPT(self.cfg, self.dtype).init_cache(K, self.cfg.context_length)
        V = self.cfg.vocab_size
        return Slots(
            cache,
            jnp.zeros((K, V), jnp.float32),
            jnp.zeros((K,), jnp.int32),
            jnp.zeros((K,), jnp.int32),
            row_keys(jax.random.key(0), K),
            jnp.zeros((K,), jnp.float32),
            jnp.ones((K,), jnp.float32),
        )

    def check(self, n_prompt: int, max_tokens: int) -> None:
        """Raise ValueError unless a prompt of n_prompt tokens plus max_tokens new ones fit."""
        check_fit(self.cfg.context_length, n_prompt, max_tokens, least_new=0)

    def submit(self, request: Request) -> Request:
        self.check(len(request.prompt), request.max_tokens)
        if request.logprobs is not None and not 0 <= request.logprobs <= WIDTHS[-1]:
            raise ValueError(f"logprobs must be in [0, {WIDTHS[-1]}], got {request.logprobs}")
        if self.error is not None:
            raise RuntimeError(f"the engine stopped: {self.error}")
        self.waiting.put(request)
        self._wake.set()
        return request

    def free(self) -> int:
        """Slots not in use."""
        return sum(r is None for r in self.busy)

    def start(self, warm: bool = True) -> Engine:
        """Run the engine's thread; `warm`: compile the prefill and decode programs first, with
        a one-token request nobody hears (`ready` is set when it is done)."""
        if warm:
            self.waiting.put(Request([0], 1, lambda tok, finish: finish and self.ready.set()))
        else:
            self.ready.set()
        self._running = True
        self._thread = threading.Thread(target=self._loop, name="gptjax-engine", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._running = False
        self._wake.set()
        if self._thread is not None:
            self._thread.join()

    def set_params(self, params) -> None:
        """Decode with `params` from the next step on (RL's policy after each update)."""
        self.params = compute_params(params, self.dtype)

    def complete(
        self,
        prompts: list[list[int]],
        *,
        max_tokens: int,
        seeds: list[int],
        temperature: float = 1.0,
        top_p: float = 1.0,
    ) -> list[list[int]]:
        """Each prompt's completion, run to its end in this thread (for batch jobs such as RL's
        rollouts; the engine's own thread must not be running): its new tokens, ending with
        eos_id when it stopped there. Prompt i draws with `seeds[i]`, as a Request would."""
        out: list[list[int]] = [[] for _ in prompts]

        def collect(i):
            def on_token(token, finish):
                if token is not None:
                    out[i].append(token)
                elif finish == "stop":
                    out[i].append(self.eos_id)

            return on_token

        for i, (prompt, seed) in enumerate(zip(prompts, seeds, strict=True)):
            self.submit(Request(prompt, max_tokens, collect(i), temperature, top_p, seed))
        while not self.waiting.empty() or any(r is not None for r in self.busy):
            self._admit()
            if any(r is not None for r in self.busy):
                self.run_step()
        return out

    def _loop(self) -> None:
        try:
            while self._running:
                self._admit()
                if all(r is None for r in self.busy):
                    self._wake.wait(0.5)
                    self._wake.clear()
                    continue
                self.run_step()
        except BaseException as e:  # tell every client instead of leaving them waiting
            self.error = e
            self.ready.set()  # ready to say so
            for i, r in enumerate(self.busy):
                if r is not None:
                    self._finish(i, "error")
            while not self.waiting.empty():
                tell(self.waiting.get(), None, "error")
            raise

    def _admit(self) -> None:
        new = []
        free = [i for i, r in enumerate(self.busy) if r is None]
        while free and not self.waiting.empty():
            r = self.waiting.get()
            if r.cancelled:
                tell(r, None, "cancelled")
                continue
            try:  # a request the engine cannot take fails alone
                r.key = jax.random.fold_in(jax.random.key(r.seed), 0)  # = row_keys(key, 1)[0]
            except (OverflowError, TypeError, ValueError):
                tell(r, None, "error")
                continue
            new.append((free.pop(0), r))
        if not new:
            return
        K = len(self.busy)
        # Rows and lengths in powers of two: a few programs serve every mix of prompts.
        k = padded_length(len(new))
        P = padded_length(max(len(r.prompt) for _, r in new), self.cfg.context_length, least=LEAST)
        prompts = np.zeros((k, P), np.int32)
        lengths, where = np.ones(k, np.int32), np.full(k, K, np.int32)
        temperature, top_p = np.zeros(k, np.float32), np.ones(k, np.float32)
        keys = [jax.random.key(0)] * k
        for j, (i, r) in enumerate(new):
            prompts[j, : len(r.prompt)] = r.prompt
            lengths[j], where[j] = len(r.prompt), i
            temperature[j], top_p[j] = r.temperature, r.top_p
            keys[j] = r.key
            self.busy[i] = r
        wanted = [r.logprobs or 0 for _, r in new if r.score_prompt and r.logprobs is not None]
        self.slots, scored = admit(
            self.cfg,
            self.params,
            self.slots,
            prompts,
            lengths,
            where,
            jnp.stack(keys),
            temperature,
            top_p,
            dtype=self.dtype,
            top=width(wanted),
        )
        self._admitted(new, jax.tree.map(np.asarray, scored))

    def _admitted(self, new: list[tuple[int, Request]], scored) -> None:
        """Hand out the prompts' scores; end the requests that only wanted those."""
        for j, (i, r) in enumerate(new):
            if scored is not None and r.score_prompt and r.logprobs is not None:
                r.prompt_scores = _rows([x[j] for x in scored], r.prompt[1:], r.logprobs)
            if r.max_tokens == 0:
                self._finish(i, "length")

    def run_step(self) -> None:
        """One decode step for every busy slot; hand each its token."""
        live = [r for r in self.busy if r is not None]
        sample = any(r.temperature > 0 for r in live)
        nucleus = any(r.temperature > 0 and r.top_p < 1.0 for r in live)
        top = width([r.logprobs or 0 for r in live if r.logprobs is not None])
        self.slots, tok, scored = step(
            self.cfg,
            self.params,
            self.slots,
            dtype=self.dtype,
            sample=sample,
            nucleus=nucleus,
            top=top,
        )
        tok = np.asarray(tok)
        scored = jax.tree.map(np.asarray, scored)
        for i, r in enumerate(self.busy):
            if r is None:
                continue
            if r.cancelled:
                self._finish(i, "cancelled")
                continue
            if r.logprobs is not None:
                r.scores += _rows([x[i : i + 1] for x in scored], tok[i : i + 1], r.logprobs)
            if tok[i] == self.eos_id:
                self._finish(i, "stop")
            else:
                r.generated += 1
                if tell(r, int(tok[i]), None) is False or r.cancelled:
                    self._finish(i, "cancelled")
                elif r.generated >= r.max_tokens:
                    self._finish(i, "length")

    def _finish(self, i: int, reason: str) -> None:
        r, self.busy[i] = self.busy[i], None
        tell(r, None, reason)


def _rows(scored, tokens, w: int) -> list[Scored]:
    """`scores` of len(tokens) positions ([n], [n, top], [n, top]) as Scored entries with w
    alternatives each."""
    lp, ids, top = scored
    return [Scored(int(t), float(lp[n]), ids[n, :w], top[n, :w]) for n, t in enumerate(tokens)]


def tell(r: Request, token: int | None, finish: str | None):
    """Call the request's callback; one that fails (its client is gone) cancels the request
    instead of stopping the engine."""
    try:
        return r.on_token(token, finish)
    except Exception:
        r.cancel()
        return False
