"""Preference data for DPO: chosen and rejected responses to one prompt, padded to buckets.

Shapes: B pairs, T tokens.
"""

from __future__ import annotations

import numpy as np

from gptjax.data import instruct
from gptjax.data.corpus import Shuffled
from gptjax.data.instruct import bucket
from gptjax.data.tokenizer import EOT_ID


class Pairs(Shuffled):
    """Preference pairs as a training dataset: chosen and rejected token sequences with their
    response masks (the prompt and padding out), padded to a bucket length, and the reference
    model's log-probabilities of each (`ref`, filled once before training)."""

    def __init__(
        self,
        chosen: list,
        rejected: list,
        prompt_lengths: list,
        max_length: int,
        pad_id: int = EOT_ID,
    ):
        self.chosen, self.rejected, self.prompts = chosen, rejected, prompt_lengths
        self.max_length, self.pad_id = max_length, pad_id
        self.ref = np.zeros((len(chosen), 2), np.float32)  # [n, (chosen, rejected)]

    def __len__(self) -> int:
        return len(self.chosen)

    def batch(self, rows) -> dict[str, np.ndarray]:
        """{"chosen", "rejected"}: int32 [B, T]; {"chosen_mask", "rejected_mask"}: bool [B, T]
        (True on the response tokens); {"ref_chosen", "ref_rejected"}: float32 [B]; "valid"."""
        longest = max(len(s[r]) for s in (self.chosen, self.rejected) for r in rows)
        T = bucket(min(longest + 1, self.max_length), self.max_length)
        out = {
            "valid": np.ones(len(rows), np.int32),
            "ref_chosen": self.ref[rows, 0],
            "ref_rejected": self.ref[rows, 1],
        }
        for key, seqs in (("chosen", self.chosen), ("rejected", self.rejected)):
            tokens = np.full((len(rows), T), self.pad_id, np.int32)
            mask = np.zeros((len(rows), T), bool)
            for b, r in enumerate(rows):
                seq = seqs[r][:T]
                tokens[b, : len(seq)] = seq
                # As the book: the prompt and the two tokens after it ("\n\n###") are masked.
                mask[b, min(self.prompts[r] + 2, len(seq)) : len(seq)] = True
            out[key], out[f"{key}_mask"] = tokens, mask
        return out


def encode_pairs(entries: list[dict], enc, max_length: int) -> Pairs:
    """Prompt (the Alpaca template, or an entry's own `prompt`) + response header + response."""
    chosen, rejected, prompts = [], [], []
    for e in entries:
        prompt = e["prompt"] if "prompt" in e else instruct.format_prompt(e)
        head = prompt if "prompt" in e else prompt + instruct.RESPONSE
        prompts.append(len(enc.encode_ordinary(prompt)))
        chosen.append(enc.encode_ordinary(head + e["chosen"])[:max_length])
        rejected.append(enc.encode_ordinary(head + e["rejected"])[:max_length])
    return Pairs(chosen, rejected, prompts, max_length, enc.eot_token)
