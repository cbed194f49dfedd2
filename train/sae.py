"""A sparse autoencoder on one hook point of a model, through the one training loop.

    python -m train.sae --ckpt runs/pretrain --hook blocks.0.hook_resid_post --data the-verdict \\
        --out runs/sae --max-steps 2000

trains a TopK SAE (--architecture relu: ReLU with an L1 penalty, --l1) of --expansion x D
latents on the activations of --hook (TransformerLens's names, gptjax.probe.hook_names), streamed
from the frozen model over windows of --data. At each evaluation it prints L0, the fraction of
variance explained, the share of dead latents and the cross entropy with the SAE spliced in
against without it; writes OUT/metrics.jsonl (val_l0, val_explained_variance, val_dead,
val_ce_sae, val_ce_clean, val_ce_zero, val_ce_recovered), OUT/sae.png, checkpoints (rerun the
command to continue) and OUT/sae in SAELens's format (sae_lens.SAE.load_from_disk opens it).
"""

from __future__ import annotations

from gptjax.options import run_cli
from gptjax.tasks.sae import SAE, Options
from train.options import script_main

__all__ = ["SAE", "Options", "main"]


def main(argv=None) -> None:
    script_main(Options, SAE, argv, __doc__, "train.sae")


if __name__ == "__main__":
    run_cli(main)
