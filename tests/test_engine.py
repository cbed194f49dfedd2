"""The batched decoding engine: whatever else is in flight, each answer equals `generate` on its
prompt alone, greedy and sampled; slots are reused and freed."""

import dataclasses
import threading

import jax
import numpy as np
import pytest

from gptjax import GPT, GPTConfig, generate, init_params
from gptjax.inference.engine import Engine, Request
from gptjax.inference.generation import completion

CFG = GPTConfig(vocab_size=61, context_length=48, emb_dim=32, n_heads=4, n_layers=2, drop_rate=0.0)
EOS = 60


@pytest.fixture(scope="module")
def params():
    p = jax.jit(init_params, static_argnums=0)(CFG, jax.random.key(0))
    return jax.tree.map(lambda x: x * 3.0, p)


MODERN = dict(position="rotary", norm="rmsnorm", qk_norm=True, activation="relu2", window=6)


@pytest.mark.parametrize("switches", [{}, MODERN], ids=["gpt2", "modern"])
def test_per_row_positions_equal_one_row_at_a_time(params, switches):
    """Each slot at its own position: rotary angles and the window follow the row's position."""
    cfg = dataclasses.replace(CFG, **switches)
    params = params if not switches else init_params(cfg, jax.random.key(1))
    model = GPT(cfg)
    apply = jax.jit(
        lambda tok, cache, pos: model.apply({"params": params}, tok, cache=cache, pos=pos)
    )
    seq = np.random.default_rng(1).integers(0, 60, (3, 12))
    cache = model.init_cache(3, cfg.context_length)
    ends = np.array([5, 9, 12])  # row b stops at ends[b]: rows end at different positions
    for t in range(12):
        pos = np.minimum(t, ends - 1)
        logits, cache = apply(seq[np.arange(3), pos][:, None], cache, pos)
    full = jax.jit(model.apply)({"params": params}, seq)
    np.testing.assert_allclose(logits[:, -1], full[np.arange(3), ends - 1], atol=1e-5)


def test_continuous_batching_equals_generate_alone(params):
    rng = np.random.default_rng(0)
    prompts = [rng.integers(0, EOS, rng.integers(1, 20)).tolist() for _ in range(5)]
    greedy = [dict(max_tokens=12) for _ in prompts]
    sampled = [dict(max_tokens=12, temperature=0.9, top_p=0.8, seed=i) for i in range(5)]
    asks = greedy + sampled
    out, done = {}, threading.Event()

    def collect(i):
        toks = []

        def on_token(tok, finish):
            if finish is None:
                toks.append(tok)
                return
            out[i] = (toks, finish)
            if len(out) == len(asks):
                done.set()

        return on_token

    engine = Engine(CFG, params, slots=3, eos_id=EOS).start()  # 10 requests through 3 slots
    try:
        for i, ask in enumerate(asks):
            engine.submit(Request(prompts[i % 5], on_token=collect(i), **ask))
        assert done.wait(120)
    finally:
        engine.stop()
    assert engine.free() == 3
    # Reference: `generate` on the ragged batch, whose rows equal each prompt alone (tested in
    # test_generation); a sampled request with seed s draws as row key fold_in(key(s), 0).
    keys = jax.numpy.stack([jax.random.fold_in(jax.random.key(i), 0) for i in range(5)])
    refs = generate(CFG, params, prompts, max_new_tokens=12, eos_id=EOS)
    refs += generate(
        CFG, params, prompts, max_new_tokens=12, eos_id=EOS, temperature=0.9, top_p=0.8, rng=keys
    )
    for i, ref in enumerate(refs):
        want = completion(ref, 12, EOS)
        assert out[i][0] == want, i
        assert out[i][1] == ("length" if len(want) == 12 else "stop")


def test_a_bad_request_or_callback_fails_alone(params):
    got = []

    def broken(tok, finish):
        raise RuntimeError("the client's event loop is closed")

    engine = Engine(CFG, params, slots=1, eos_id=EOS).start()
    try:
        engine.submit(Request([1, 2], 3, lambda t, f: got.append(("seed", f)), seed=2**70))
        engine.submit(Request([1, 2], 3, broken))
        done = threading.Event()
        engine.submit(Request([1, 2], 3, lambda t, f: f and (got.append(("ok", f)), done.set())))
        assert done.wait(60)
    finally:
        engine.stop()
    assert got == [("seed", "error"), ("ok", "length")] and engine.error is None


def test_requests_that_do_not_fit_are_refused(params):
    engine = Engine(CFG, params, slots=1)
    with pytest.raises(ValueError, match="max_tokens=9 does not fit: it must be between 0 and 8"):
        engine.submit(Request([1] * 40, max_tokens=9, on_token=print))
    with pytest.raises(ValueError, match="at least one token"):
        engine.submit(Request([], max_tokens=1, on_token=print))


def test_scores_are_the_log_softmax_of_prompt_and_answer_with_the_end_token(params):
    """Log-probs of prompt tokens 1.. and of every answer token, end-of-text included, equal
    the model's log_softmax over the whole sequence; max_tokens 0 only scores the prompt."""
    rng = np.random.default_rng(3)
    prompts = [rng.integers(0, EOS, rng.integers(2, 20)).tolist() for _ in range(6)]
    asks = [Request(p, 12, None, logprobs=2, score_prompt=True) for p in prompts]
    asks.append(Request(prompts[0], 0, None, logprobs=0, score_prompt=True))
    logp = jax.jit(lambda x: jax.nn.log_softmax(GPT(CFG).apply({"params": params}, x)))
    padded = lambda seq: np.array([seq + [0] * (CFG.context_length - len(seq))])  # one program
    eos = int(np.argmax(logp(padded(prompts[0]))[0, len(prompts[0]) - 1]))  # prompt 0's answer
    out, done = {}, threading.Event()
    for i, r in enumerate(asks):
        toks = []
        r.on_token = lambda t, f, i=i, toks=toks: (
            toks.append(t)
            if f is None
            else (out.update({i: (toks, f)}), len(out) == 7 and done.set())
        )
    engine = Engine(CFG, params, slots=4, eos_id=eos).start()
    try:
        for r in asks:
            engine.submit(r)
        assert done.wait(120)
    finally:
        engine.stop()
    finishes = [out[i][1] for i in range(6)]
    assert "stop" in finishes and "length" in finishes  # both ends are checked
    for i, r in enumerate(asks):
        toks, finish = out[i]
        seq = r.prompt + toks + ([eos] if finish == "stop" else [])
        full = np.asarray(logp(padded(seq)))[0, : len(seq)]  # causal: the pads change nothing
        scored = r.prompt_scores + r.scores
        assert [s.token for s in scored] == seq[1:]
        want = full[np.arange(len(seq) - 1), seq[1:]]
        np.testing.assert_allclose([s.logprob for s in scored], want, atol=1e-4)
        best = -np.sort(-full[:-1], axis=-1)[:, : r.logprobs]
        np.testing.assert_allclose([s.top_logprobs for s in scored], best, atol=1e-4)
    assert out[6] == ([], "length") and len(asks[6].prompt_scores) == len(prompts[0]) - 1
