"""Decoding one step ahead. After a greedy decode step's kernels are queued, the step after it is
queued too, fed on the device with the tokens the first one picks (their argmax), before the host
has read them: the host's share of a step (reading the tokens, stop checks, scheduling, the next
inputs) then runs while the GPU computes, instead of between its steps (vLLM's async scheduling
and SGLang's overlap scheduler do the same). The engine asks for it only where the next step is
very likely the same batch (kb.rag.engine): nothing waiting to join, no speculation, not every
sequence ending by its length. The scheduler has reserved each sequence a block for the token
after its next one.

When the next step is planned, the queued one is used if the plan is the same sequences, or some
of them (the rows of those that stopped are dropped), each at the context and with the blocks it
was queued with. Otherwise it is dropped. Either way what it wrote is each sequence's own slot
after its last token: the real step writes it again for a sequence that goes on, and no one reads
it for one that stopped (the prefix cache keeps only computed tokens; a block is only handed on
after it, in stream order). A kept step's remaining rows were computed in the larger batch: the
kernels' tiles then differ, so in bf16 a token can differ from the batch's without the stopped
rows, as between any two batchings.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kb.rag.scheduler import Sequence
from kb.rag.speculate import eligible


def greedy_decode(plan: list[tuple[Sequence, int]]) -> bool:
    """A step that greedy decoding alone makes: one new token of each generating sequence."""
    return all(n == 1 and not s.draft and s.computed >= s.prompt_len and eligible(s.params) for s, n in plan)


@dataclass
class Queued:
    """A greedy decode step whose kernels are queued: its sequences (its rows, in order), each one's
    context length and block table as they were then (the list and its length), and each row's
    argmax on the device, copied to the host as `done` is reached."""
    seqs: list[Sequence]
    ctx: list[int]
    tables: list[tuple[list[int], int]]
    tokens: torch.Tensor
    host: torch.Tensor
    done: torch.cuda.Event | None

    def rows(self, plan: list[tuple[Sequence, int]]) -> list[int] | None:
        """Each planned sequence's row, if every one was queued as it is planned now; else None."""
        at = {s: i for i, s in enumerate(self.seqs)}  # (sequences hash by identity)
        rows = []
        for s, _ in plan:
            i = at.get(s)
            if i is None or self.ctx[i] != s.computed + 1:
                return None
            table, blocks = self.tables[i]
            if table is not s.blocks or blocks > len(s.blocks):  # a table is only appended to, or replaced
                return None
            rows.append(i)
        return rows

    def read(self) -> list[int]:
        """The rows' tokens, once the step is done (not waiting for anything queued after it)."""
        if self.done is not None:
            self.done.synchronize()
        return self.host.tolist()


def queue(logits: torch.Tensor, seqs: list[Sequence], ctx: list[int]) -> Queued:
    """A step whose (rows, vocab) logits are being computed: their argmax, on its way to the host."""
    tokens = logits.argmax(-1)
    cuda = tokens.is_cuda
    host = torch.empty(tokens.shape, dtype=tokens.dtype, pin_memory=cuda)
    host.copy_(tokens, non_blocking=cuda)
    done = None
    if cuda:
        done = torch.cuda.Event()
        done.record(torch.cuda.current_stream(tokens.device))
    return Queued(seqs, ctx, [(s.blocks, len(s.blocks)) for s in seqs], tokens, host, done)
