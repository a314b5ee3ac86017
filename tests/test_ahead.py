"""Decoding one step ahead (kb.rag.ahead): the engine queues a greedy decode step's successor before
reading its tokens. On a GPU that overlaps the host with the device; here, on the CPU, the same
code runs synchronously, and what is tested is that it changes nothing: the tokens of plain
step-by-step decoding, with sequences ending at different lengths while others go on (a queued
step then holds rows no one plans), a stop token, a sampled request beside greedy ones, a block
boundary every 4 tokens, and a pool small enough that reserving the next block fails and
sequences are preempted."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


def _tiny():
    from transformers import AutoModelForCausalLM, LlamaConfig

    shape = dict(architectures=["LlamaForCausalLM"], vocab_size=40, hidden_size=64, intermediate_size=128,
                 num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                 initializer_range=0.3)
    torch.manual_seed(4)
    return shape, AutoModelForCausalLM.from_config(LlamaConfig(**shape), dtype=torch.float32).eval()


def test_decoding_ahead_gives_the_tokens_of_step_by_step_decoding(monkeypatch):
    from tiny import random_engine

    from kb.rag import ahead
    from kb.rag.decoder import ModelConfig
    from kb.rag.sampling import SamplingParams

    shape, hf = _tiny()
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(3, 40, (n,), generator=g).tolist() for n in (9, 23, 14, 30)]
    used = []
    real_rows = ahead.Queued.rows
    monkeypatch.setattr(ahead.Queued, "rows",
                        lambda self, plan: used.append((r := real_rows(self, plan), len(self.seqs))) or r)

    def run(params, runs_ahead, blocks=128, together=True):
        eng = random_engine(ModelConfig.from_dict(shape), hf.state_dict(), block_size=4, blocks=blocks,
                            token_budget=64)
        eng.runner.runs_ahead = runs_ahead
        outs = (eng.generate(prompts, params) if together
                else [eng.generate([p], q)[0] for p, q in zip(prompts, params)])
        pool = eng.pool
        assert pool.num_free + eng.radix.blocks == pool.num_blocks  # no block is left behind
        return [(o.token_ids, o.finish_reason) for o in outs]

    greedy = [SamplingParams(max_tokens=n, ignore_eos=True) for n in (12, 30, 21, 30)]
    plain = run(greedy, False)
    stop = plain[1][0][7]  # a token the second answer makes midway: it stops there
    cases = [greedy, [greedy[0], SamplingParams(max_tokens=30, stop_token_ids=(stop,)), *greedy[2:]],
             [*greedy[:3], SamplingParams(max_tokens=8, temperature=0.8, seed=5)]]
    for params in cases:
        want = run(params, False)
        for kw in ({}, {"together": False}, {"blocks": 24}):
            start = len(used)
            assert run(params, True, **kw) == want, (params, kw)
            assert any(r is not None for r, _ in used[start:]), kw  # queued steps were used
    assert run(cases[1], False) != plain  # the stop token did stop an answer early, and
    assert any(r is not None and len(r) < n for r, n in used)  # a row of a queued step was dropped
