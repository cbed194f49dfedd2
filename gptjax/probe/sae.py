"""Sparse autoencoders on one hook point's activations, in SAELens's math and on-disk format.

    z = act(W_enc^T (x - b_dec) + b_enc)        x [..., D] -> z [..., F] (F latents)
    x_hat = z W_dec + b_dec                     W_enc [D, F], W_dec [F, D]

`act` is ReLU ("relu": SAELens's "standard" SAE, trained with an L1 penalty on the latents
weighted by their decoder norms) or TopK ("topk": the k largest pre-activations, ReLU'd, the
rest 0; trained on the reconstruction alone). `save` writes SAELens's folder (cfg.json,
sae_weights.safetensors), which `sae_lens.SAE.load_from_disk` opens; `load` reads it back.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from gptjax.files import atomic_dir

ARCHITECTURES = {"relu": "standard", "topk": "topk"}  # ours -> SAELens's name
WEIGHTS, CONFIG = "sae_weights.safetensors", "cfg.json"
SAELENS_FORMAT = "6.0.0"


@dataclass(frozen=True)
class SAEConfig:
    """An SAE's shape and kind; `metadata` (model, hook name, data, ...) travels in cfg.json."""

    d_in: int
    d_sae: int
    architecture: str = "topk"
    k: int = 32
    l1: float = 5.0
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.architecture not in ARCHITECTURES:
            raise ValueError(
                f"SAE architecture {self.architecture!r}: expected one of "
                f"{', '.join(ARCHITECTURES)}"
            )
        if self.architecture == "topk" and not 0 < self.k <= self.d_sae:
            raise ValueError(f"--k {self.k}: must be in [1, {self.d_sae}] (the SAE's latents)")


def init_sae(cfg: SAEConfig, key) -> dict:
    """Decoder rows of unit norm in random directions, the encoder their transpose, biases 0
    (SAELens's initialisation)."""
    W_dec = jax.random.normal(key, (cfg.d_sae, cfg.d_in), jnp.float32)
    W_dec = W_dec / jnp.linalg.norm(W_dec, axis=-1, keepdims=True)
    return {
        "W_enc": W_dec.T,
        "b_enc": jnp.zeros(cfg.d_sae),
        "W_dec": W_dec,
        "b_dec": jnp.zeros(cfg.d_in),
    }


def encode(cfg: SAEConfig, sae: dict, x: jax.Array) -> jax.Array:
    """x [..., D] -> latents z [..., F]."""
    pre = (x - sae["b_dec"]) @ sae["W_enc"] + sae["b_enc"]
    if cfg.architecture == "relu":
        return jax.nn.relu(pre)
    top, where = jax.lax.top_k(pre, cfg.k)
    chosen = jax.nn.one_hot(where, cfg.d_sae, dtype=pre.dtype)  # [..., k, F]
    return jnp.einsum("...k,...kf->...f", jax.nn.relu(top), chosen)


def decode(sae: dict, z: jax.Array) -> jax.Array:
    """latents z [..., F] -> reconstruction [..., D]."""
    return z @ sae["W_dec"] + sae["b_dec"]


def loss_sums(cfg: SAEConfig, sae: dict, x: jax.Array) -> tuple[jax.Array, jax.Array, dict]:
    """x [M, D] (M activations) -> (loss summed over them, M, {"mse", "l0", "l1"} summed):
    the squared error summed over D, plus for "relu" `l1` x the latents weighted by their
    decoder norms."""
    z = encode(cfg, sae, x)
    mse = jnp.sum(jnp.square(decode(sae, z) - x), -1)
    l1 = jnp.sum(z * jnp.linalg.norm(sae["W_dec"], axis=-1), -1)
    loss = mse + (cfg.l1 * l1 if cfg.architecture == "relu" else 0.0)
    sums = {"mse": jnp.sum(mse), "l0": jnp.sum(z > 0), "l1": jnp.sum(l1)}
    return jnp.sum(loss), jnp.float32(x.shape[0]), sums


def saelens_config(cfg: SAEConfig) -> dict:
    """cfg.json as SAELens writes it for this SAE."""
    out = {
        "architecture": ARCHITECTURES[cfg.architecture],
        "d_in": cfg.d_in,
        "d_sae": cfg.d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        # the format this folder follows: SAELens 6's (older ones are converted on load)
        "metadata": {"sae_lens_version": SAELENS_FORMAT, **cfg.metadata},
    }
    if cfg.architecture == "topk":
        out |= {"k": cfg.k, "rescale_acts_by_decoder_norm": False}
    return out


def save(cfg: SAEConfig, sae: dict, out: Path) -> Path:
    """Write SAELens's folder (cfg.json, sae_weights.safetensors) and gptjax's own record of
    the config (gptjax_sae.json), whole or not at all."""
    from safetensors.numpy import save_file

    out = Path(out)
    with atomic_dir(out) as tmp:
        tensors = {k: np.ascontiguousarray(np.asarray(v, np.float32)) for k, v in sae.items()}
        save_file(tensors, str(tmp / WEIGHTS))
        (tmp / CONFIG).write_text(json.dumps(saelens_config(cfg), indent=2) + "\n")
        (tmp / "gptjax_sae.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    return out


def load(folder: Path) -> tuple[SAEConfig, dict]:
    """An SAE `save` wrote: (its config, its weights)."""
    from safetensors.numpy import load_file

    folder = Path(folder)
    try:
        cfg = SAEConfig(**json.loads((folder / "gptjax_sae.json").read_text()))
        weights = load_file(str(folder / WEIGHTS))
    except (OSError, ValueError, TypeError) as e:
        raise ValueError(f"{folder}: not an SAE gptjax wrote ({type(e).__name__}: {e})") from None
    return cfg, {k: jnp.asarray(v) for k, v in weights.items()}
