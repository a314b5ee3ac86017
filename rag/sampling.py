"""Choosing the next token: greedy, or temperature with top-k and top-p, after a repetition
penalty; each request has its own seeded generator, so a seeded request samples the same tokens
whatever else is in its batch."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kb.errors import UsageError


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 256
    temperature: float = 0.0  # 0: greedy
    top_k: int = 0  # 0: no limit
    top_p: float = 1.0
    repetition_penalty: float = 1.0  # as in Hugging Face: >1 discourages tokens already present
    stop: tuple[str, ...] = ()  # strings that end the answer (not included in it)
    stop_token_ids: tuple[int, ...] = ()  # besides the model's end-of-sequence tokens
    ignore_eos: bool = False
    seed: int | None = None
    logprobs_of: tuple[int, ...] = ()  # token ids whose log-probabilities at the first sampled position are reported

    def __post_init__(self):
        if self.max_tokens < 1:
            raise UsageError("max tokens must be at least 1")
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.top_k < 0 or self.repetition_penalty <= 0:
            raise UsageError("temperature >= 0, 0 < top_p <= 1, top_k >= 0, repetition penalty > 0")


def penalize(logits: torch.Tensor, seen: list[int], penalty: float) -> torch.Tensor:
    """logits: (vocab,); seen: token ids already in the sequence."""
    if penalty == 1.0 or len(seen) == 0:
        return logits
    seen = torch.tensor(seen, device=logits.device)
    scores = logits[seen]
    logits = logits.clone()
    logits[seen] = torch.where(scores < 0, scores * penalty, scores / penalty)
    return logits


def filter_top(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        ordered, order = torch.sort(logits, descending=True)
        probs = ordered.softmax(-1)
        # drop a token once the tokens before it already reach top_p (the first always stays)
        drop = probs.cumsum(-1) - probs >= top_p
        logits = logits.clone()
        logits[order[drop]] = float("-inf")
    return logits


def sample(logits: torch.Tensor, params: list[SamplingParams], seen: list[list[int]],
           generators: list[torch.Generator | None]) -> list[int]:
    """logits: (seqs, vocab) float32 -> one token id per sequence."""
    simple = all(p.temperature == 0 and p.repetition_penalty == 1.0 for p in params)
    if simple:
        return logits.argmax(-1).tolist()
    out = []
    for row, p, s, g in zip(logits, params, seen, generators):
        row = penalize(row, s, p.repetition_penalty)
        if p.temperature == 0:
            out.append(int(row.argmax()))
            continue
        row = filter_top(row / p.temperature, p.top_k, p.top_p)
        probs = row.softmax(-1)
        out.append(int(torch.multinomial(probs.cpu(), 1, generator=g)))
    return out
