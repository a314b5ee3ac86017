"""Prompt-lookup speculation (kb.rag.speculate): the lookup and the acceptance rule, then the
engine with speculation on against plain greedy decoding, token for token, on a tiny random
model (fast: chunked prefill, small blocks, preemption) and on the real SmolLM2 quoting a source
(slow), where it also takes fewer forward passes."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from kb.rag.speculate import Lookup, accept  # noqa: E402


def test_lookup_proposes_what_followed_the_latest_longest_tail():
    tokens = [1, 2, 3, 9, 9, 1, 2, 3, 7, 8, 5, 2, 3]
    assert Lookup().propose(tokens, 4) == [7, 8, 5, 2]  # "2 3" last started at 6; 3-gram "5 2 3" unseen
    assert Lookup().propose(tokens, 2) == [7, 8]
    assert Lookup().propose([4, 5, 6], 3) == []  # nothing repeats
    assert Lookup().propose([5], 3) == [] and Lookup().propose(tokens, 0) == Lookup().propose(tokens, -2) == []
    grown, lookup = [1, 2, 3, 4], Lookup()
    assert lookup.propose(grown, 2) == []
    for t in (1, 2):  # appended later: indexed incrementally
        grown.append(t)
    assert lookup.propose(grown, 2) == [3, 4]


def test_accept_keeps_the_confirmed_prefix_and_the_next_token():
    assert accept([5, 6, 7], [5, 6, 9, 1]) == [5, 6, 9]
    assert accept([5, 6, 7], [5, 6, 7, 1]) == [5, 6, 7, 1]
    assert accept([5], [4, 0]) == [4]


def _tiny(seed=3, **changes):
    from transformers import AutoModelForCausalLM, LlamaConfig

    shape = dict(architectures=["LlamaForCausalLM"], vocab_size=40, hidden_size=64, intermediate_size=128,
                 num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                 initializer_range=0.3) | changes
    torch.manual_seed(seed)
    return shape, AutoModelForCausalLM.from_config(LlamaConfig(**shape), dtype=torch.float32).eval()


def test_speculating_gives_plain_greedy_tokens_on_a_tiny_model():
    """A 40-token vocabulary makes greedy decoding loop, so guesses are often right and often wrong."""
    from tiny import random_engine

    from kb.rag.decoder import ModelConfig
    from kb.rag.sampling import SamplingParams

    shape, hf = _tiny()
    g = torch.Generator().manual_seed(1)
    base = torch.randint(3, 40, (30,), generator=g).tolist()
    prompts = [base + base[:n] for n in (3, 11, 17)] + [torch.randint(3, 40, (25,), generator=g).tolist()]
    params = SamplingParams(max_tokens=40, ignore_eos=True)

    def run(speculate, blocks=128, budget=512, together=False):
        eng = random_engine(ModelConfig.from_dict(shape), hf.state_dict(), block_size=4, blocks=blocks,
                            token_budget=budget, speculate=speculate)
        steps = []
        real = eng.runner.run
        eng.runner.run = lambda plan, **kw: steps.append(sum(len(s.draft) for s, _ in plan)) or real(plan, **kw)
        out = ([o.token_ids for o in eng.generate(prompts, params)] if together
               else [eng.generate([p], params)[0].token_ids for p in prompts])
        return out, steps
    plain, plain_steps = run(0)
    for kw in ({}, {"budget": 16}, {"together": True}, {"blocks": 40, "budget": 16, "together": True}):
        fast, steps = run(8, **kw)
        assert fast == plain, kw
        assert any(steps), kw  # guesses were made
    assert len(run(8)[1]) < len(plain_steps)  # and some were right: fewer forward passes


def test_a_draft_model_gives_plain_greedy_tokens():
    """Guesses from a draft model: the target itself (all right), a smaller model of another
    shape and seed (mostly wrong), and one whose vocabulary is larger than the target's (ids it
    lacks are never guessed); with chunked prefill, several sequences at once, a draft pool too
    small for every sequence and preemption of the target's."""
    from tiny import random_engine

    from kb.rag.decoder import ModelConfig
    from kb.rag.sampling import SamplingParams

    shape, hf = _tiny()
    g = torch.Generator().manual_seed(2)
    base = torch.randint(3, 40, (30,), generator=g).tolist()
    prompts = [base + base[:n] for n in (3, 17)] + [torch.randint(3, 40, (25,), generator=g).tolist()]
    params = SamplingParams(max_tokens=30, ignore_eos=True)
    cfg = ModelConfig.from_dict(shape)

    def run(draft=None, speculate=0, blocks=128, budget=512, together=False):
        eng = random_engine(cfg, hf.state_dict(), block_size=4, blocks=blocks, token_budget=budget,
                            speculate=speculate, draft=draft)
        passes = []
        real = eng.runner.run
        eng.runner.run = lambda plan, **kw: passes.append(1) or real(plan, **kw)
        out = ([o.token_ids for o in eng.generate(prompts, params)] if together
               else [eng.generate([p], params)[0].token_ids for p in prompts])
        if draft is not None:
            assert not eng.scheduler.drafter.shadows  # finished sequences release their draft blocks
            assert eng.scheduler.drafter.runner.pool.num_free == eng.scheduler.drafter.runner.pool.num_blocks
        return out, len(passes)

    plain, plain_passes = run()
    same, same_passes = run((cfg, hf.state_dict()), speculate=4)
    assert same == plain and same_passes < plain_passes / 3  # every guess right: 5 tokens a pass
    small_shape, small = _tiny(seed=9, hidden_size=32, intermediate_size=64, num_hidden_layers=1)
    wide_shape, wide = _tiny(seed=5, vocab_size=48)
    for draft in ((ModelConfig.from_dict(small_shape), small.state_dict()),
                  (ModelConfig.from_dict(wide_shape), wide.state_dict())):
        for kw in ({}, {"budget": 16, "together": True}, {"blocks": 40, "budget": 16, "together": True}):
            assert run(draft, speculate=3, **kw)[0] == plain, kw


@pytest.mark.slow
def test_speculating_on_smollm2_quoting_a_source_matches_and_saves_passes(smollm2):
    from transformers import AutoTokenizer

    from kb.rag.engine import Engine, EngineConfig
    from kb.rag.kv_cache import CacheConfig
    from kb.rag.sampling import SamplingParams

    tok = AutoTokenizer.from_pretrained(smollm2)
    source = ("A sourdough starter is fed with equal weights of flour and water once a day and kept at room "
              "temperature. Before baking, the starter should double in size within four to eight hours.")
    chat = tok.apply_chat_template([{"role": "user", "content": f"Source:\n{source}\n\nRepeat the source word for "
                                                                 "word."}], add_generation_prompt=True, tokenize=False)
    ids = tok(chat, add_special_tokens=False)["input_ids"]
    params = SamplingParams(max_tokens=48)
    outs, passes = [], []
    for speculate in (0, 8):
        eng = Engine(EngineConfig(model=str(smollm2), device="cpu", speculate=speculate,
                                  cache=CacheConfig(num_blocks=256)))
        calls = []
        real = eng.runner.run
        eng.runner.run = lambda plan, **kw: calls.append(1) or real(plan, **kw)
        outs.append(eng.generate([ids], params)[0].token_ids)
        passes.append(len(calls))
    assert outs[0] == outs[1] and len(outs[0]) > 20
    assert passes[1] < passes[0] / 2  # the quote is guessed from the prompt
