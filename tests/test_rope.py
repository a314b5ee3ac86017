"""Long-context rotary scaling in kb's decoder (linear, Llama 3, YaRN, dynamic NTK) against Hugging
Face's implementation: the same frequencies and attention factor from the same config, and on a
tiny random Qwen2 with YaRN or dynamic NTK, the same greedy tokens as HF `generate` past the
original context."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from kb.rag.decoder import ModelConfig  # noqa: E402
from kb.rag.rope import dynamic_frequencies, rotary  # noqa: E402

SHAPE = dict(architectures=["Qwen2ForCausalLM"], vocab_size=300, hidden_size=64, intermediate_size=128,
             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
             tie_word_embeddings=True, initializer_range=0.2)
SCALINGS = [
    {"rope_type": "linear", "factor": 4.0},
    {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
     "original_max_position_embeddings": 16},
    {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32},
    {"rope_type": "yarn", "factor": 16.0, "original_max_position_embeddings": 32, "beta_fast": 16, "beta_slow": 2},
    {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32, "mscale": 0.7, "mscale_all_dim": 1.0},
    {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32, "attention_factor": 1.3},
    {"rope_type": "dynamic", "factor": 2.0},
]


def _hf_config(scaling: dict):
    from transformers import Qwen2Config

    return Qwen2Config(**SHAPE, rope_parameters={**scaling, "rope_theta": 10000.0})


@pytest.mark.parametrize("scaling", SCALINGS, ids=lambda s: s["rope_type"] + str(len(s)))
def test_frequencies_and_attention_factor_match_hugging_face(scaling):
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    want, want_scale = ROPE_INIT_FUNCTIONS[scaling["rope_type"]](_hf_config(scaling), torch.device("cpu"))
    got, got_scale = rotary(ModelConfig.from_dict({**SHAPE, "rope_parameters": {**scaling, "rope_theta": 10000.0}}))
    torch.testing.assert_close(got, want.float(), rtol=1e-6, atol=0)
    assert got_scale == pytest.approx(want_scale, rel=1e-9)


def test_yarn_greedy_tokens_match_hf_past_the_original_context():
    from tiny import random_engine
    from transformers import AutoModelForCausalLM

    from kb.rag.sampling import SamplingParams

    scaling = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32, "rope_theta": 10000.0}
    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(_hf_config(scaling), dtype=torch.float32).eval()
    cfg = ModelConfig.from_dict({**SHAPE, "rope_parameters": scaling})
    assert cfg.max_positions == 128  # the context YaRN extends to
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(3, 300, (n,), generator=g).tolist() for n in (20, 70, 110)]
    with torch.inference_mode():
        want = [hf.generate(torch.tensor([p]), max_new_tokens=8, min_new_tokens=8, do_sample=False, eos_token_id=None,
                            pad_token_id=0)[0, len(p):].tolist() for p in prompts]
        logits = hf(torch.tensor([prompts[2]])).logits[0].float()
    eng = random_engine(cfg, hf.state_dict(), block_size=8, blocks=64, token_budget=64)
    assert [o.token_ids for o in eng.generate(prompts, SamplingParams(max_tokens=8, ignore_eos=True))] == want
    from kb.rag.batch import Batch

    ids = prompts[2]
    batch = Batch.build([len(ids)], [len(ids)], [list(range(14))], 8, torch.device("cpu"), ids)
    ours = eng.runner.model.logits(eng.runner.forward(batch))
    torch.testing.assert_close(ours, logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("factor", [2.0, 3.5])
def test_dynamic_ntk_frequencies_match_hugging_face_at_each_length(factor):
    """Past the trained context (32) the base grows with the length, exactly as HF recomputes it
    in a forward (its length there a tensor); up to it, the plain frequencies."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    scaling = {"rope_type": "dynamic", "factor": factor}
    cfg = ModelConfig.from_dict({**SHAPE, "rope_parameters": {**scaling, "rope_theta": 10000.0}})
    plain, _ = rotary(cfg)
    lengths = [5, 32, 33, 48, 48, 200]
    got = dynamic_frequencies(cfg, plain, lengths)
    for row, n in zip(got, lengths):
        want = plain if n <= 32 else ROPE_INIT_FUNCTIONS["dynamic"](_hf_config(scaling), torch.device("cpu"),
                                                                    seq_len=torch.tensor(n))[0]
        torch.testing.assert_close(row, want.float(), rtol=0, atol=0)
    assert dynamic_frequencies(cfg, plain, [3, 32]) is None and cfg.max_positions == int(32 * factor)


def test_dynamic_ntk_greedy_tokens_match_hf_and_long_prompts_share_no_cache():
    """kb's engine (chunked prefill, prefix cache, several prompts at once) against HF `generate`,
    one prompt at a time: a short prompt generating past the trained context, a long prompt that
    begins like the short one (its keys rotate for its own length: it must not reuse the short
    one's cached prefix, nor leave its own), a short one after it that reuses the first's."""
    from tiny import random_engine
    from transformers import AutoModelForCausalLM

    from kb.rag.sampling import SamplingParams

    scaling = {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0}
    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(_hf_config(scaling), dtype=torch.float32).eval()
    g = torch.Generator().manual_seed(2)
    short = torch.randint(3, 300, (28,), generator=g).tolist()
    long = short[:24] + torch.randint(3, 300, (26,), generator=g).tolist()
    again = short[:26] + torch.randint(3, 300, (3,), generator=g).tolist()
    prompts = [short, long, again]

    def hf_tokens(p):  # HF keeps the longest length it has seen: a fresh rotary state per prompt
        rope = hf.model.rotary_emb
        rope.inv_freq, rope.max_seq_len_cached = rope.original_inv_freq.clone(), rope.original_max_seq_len
        out = hf.generate(torch.tensor([p]), max_new_tokens=12, min_new_tokens=12, do_sample=False,
                          eos_token_id=None, pad_token_id=0)
        return out[0, len(p):].tolist()
    with torch.inference_mode():
        want = [hf_tokens(p) for p in prompts]
    eng = random_engine(ModelConfig.from_dict({**SHAPE, "rope_parameters": scaling}), hf.state_dict(),
                        block_size=8, blocks=64, token_budget=16)
    params = SamplingParams(max_tokens=12, ignore_eos=True)
    assert [o.token_ids for o in eng.generate(prompts[:2], params)] == want[:2]
    out = eng.generate([again], params)[0]
    assert out.token_ids == want[2] and out.cached_tokens == 26  # the short prompt's, not the long one's
