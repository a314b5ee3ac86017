"""kb's generator against Hugging Face `generate`, with the real SmolLM2-135M-Instruct in fp32 on
the CPU: greedy outputs must be identical token for token, one by one, as one batch, with the
prompt's prefix served from the in-memory cache, and from the disk cache in a new process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from kb.rag.packed import PackedLinear, packable  # noqa: E402

SYSTEM = ("You are kb, a careful assistant. Answer from the numbered sources only, cite them as [n], "
          "and say so when they do not contain the answer. Sources:\n[1] notes/bread.md:1-4\nA sourdough "
          "starter is fed with equal weights of flour and water once a day and kept at room temperature.\n")
QUESTIONS = ["How often is a starter fed?", "What is a starter fed with?", "Where is the starter kept?",
             "Summarise source 1.", "What does kb do?"]
PLAIN = ["The capital of France is", "def fibonacci(n):", "Once upon a time, in a land far away,",
         "The three laws of thermodynamics are", "List three colours:"]
NEW = 32


@pytest.fixture(scope="module")
def prompts(smollm2):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2)
    chats = [tok.apply_chat_template([{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}],
                                     add_generation_prompt=True, tokenize=False) for q in QUESTIONS]
    return [tok(t, add_special_tokens=False)["input_ids"] for t in chats] + [tok(p)["input_ids"] for p in PLAIN]


@pytest.fixture(scope="module")
def expected(smollm2, prompts):
    """Hugging Face's greedy continuations, without the end-of-sequence token."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.float32).eval()
    eos = model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos])
    out = []
    for ids in prompts:
        with torch.inference_mode():
            gen = model.generate(torch.tensor([ids]), max_new_tokens=NEW, do_sample=False)[0, len(ids):].tolist()
        out.append([t for t in gen if t not in eos])
    return out


def engine(model, **kw):
    from kb.rag.engine import Engine, EngineConfig
    from kb.rag.kv_cache import CacheConfig

    return Engine(EngineConfig(model=str(model), device="cpu", cache=CacheConfig(num_blocks=kw.pop("blocks", 256)), **kw))


def greedy():
    from kb.rag.sampling import SamplingParams

    return SamplingParams(max_tokens=NEW)


@pytest.mark.parametrize("arch", ["LlamaForCausalLM", "Qwen2ForCausalLM"])
def test_tiny_random_model_matches_hf(arch):
    """The engine's whole CPU path (scheduler, model runner, batches, torch attention, the layers'
    reference kernels) on a tiny random model, fast: greedy tokens equal Hugging Face's one by one,
    as one batch sharing a prefix, in prefill chunks, and with a cache so small that it preempts."""
    from tiny import random_engine
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    from kb.rag.decoder import ModelConfig
    from kb.rag.sampling import SamplingParams

    shape = dict(architectures=[arch], vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                 tie_word_embeddings=arch.startswith("Qwen2"), initializer_range=0.2)
    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config((Qwen2Config if arch.startswith("Qwen2") else LlamaConfig)(**shape),
                                          dtype=torch.float32).eval()
    g = torch.Generator().manual_seed(1)
    shared = torch.randint(3, 300, (37,), generator=g).tolist()
    prompts = [shared + torch.randint(3, 300, (n,), generator=g).tolist() for n in (1, 9, 20, 33)]
    with torch.inference_mode():
        want = [hf.generate(torch.tensor([p]), max_new_tokens=8, min_new_tokens=8, do_sample=False, eos_token_id=None,
                            pad_token_id=0)[0, len(p):].tolist() for p in prompts]
    params = SamplingParams(max_tokens=8, ignore_eos=True)

    def make(blocks, budget, fuse=False):
        eng = random_engine(ModelConfig.from_dict(shape), hf.state_dict(), block_size=4, blocks=blocks,
                            token_budget=budget)
        eng.runner.attention.fuse_decode = fuse  # decode steps through the fused layers' references
        return eng
    eng = make(64, 512)
    assert [eng.generate([p], params)[0].token_ids for p in prompts] == want
    assert [o.token_ids for o in make(64, 16).generate(prompts, params)] == want
    assert [o.token_ids for o in make(20, 16).generate(prompts, params)] == want
    assert [o.token_ids for o in make(64, 16, fuse=True).generate(prompts, params)] == want
    assert isinstance(eng.model.layers[0].gate_up, PackedLinear) == packable(torch.float32)  # the CPU's path


def test_a_step_caches_the_prompts_it_completes_before_it_samples(monkeypatch):
    """Engine.step inserts a completed prompt into the prefix cache while the step runs (on a GPU,
    while its kernels do), so it is there when the step samples; a step whose forward fails
    caches nothing of it."""
    from tiny import random_engine
    from transformers import AutoModelForCausalLM, LlamaConfig

    import kb.rag.runner as runner
    from kb.rag.decoder import ModelConfig
    from kb.rag.sampling import SamplingParams

    shape = dict(architectures=["LlamaForCausalLM"], vocab_size=50, hidden_size=32, intermediate_size=64,
                 num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128)
    torch.manual_seed(0)
    weights = AutoModelForCausalLM.from_config(LlamaConfig(**shape)).state_dict()
    prompt = list(range(3, 40))  # 9 full blocks of 4, and a partial one
    eng = random_engine(ModelConfig.from_dict(shape), weights, block_size=4)
    seen, real = [], runner.sample
    monkeypatch.setattr(runner, "sample", lambda *a: seen.append(eng.radix.cached(prompt)) or real(*a))
    eng.generate([prompt], SamplingParams(max_tokens=2))
    assert seen[0] >= 36  # the full blocks (`cached` counts the partial one as a block)
    failing = random_engine(ModelConfig.from_dict(shape), weights, block_size=4)
    monkeypatch.setattr(failing.runner, "forward", lambda *a: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        failing.generate([prompt], SamplingParams(max_tokens=2))
    assert failing.radix.cached(prompt) == 0


def test_packed_linear_layers_give_the_dense_products():
    """kb.rag.packed: oneDNN's reordered weights give F.linear's result for the rows of a decode
    step, a speculative one and a prefill chunk; bf16 is never packed (no gain without bf16
    instructions). Where this torch has no oneDNN, nothing is packed and the tests above cover it."""
    from torch.nn import functional as F

    if not packable(torch.float32):
        pytest.skip("this torch build has no oneDNN: the runner keeps torch's dense products")
    g = torch.Generator().manual_seed(0)
    w, b = torch.randn(300, 64, generator=g), torch.randn(300, generator=g)
    layer = PackedLinear(w, b)
    for rows in (1, 5, 200):
        x = torch.randn(rows, 64, generator=g)
        torch.testing.assert_close(layer(x), F.linear(x, w, b), rtol=1e-5, atol=1e-5)
    assert torch.equal(layer.weight, w) and not packable(torch.bfloat16)


@pytest.mark.slow
def test_one_by_one_then_from_the_prefix_cache(smollm2, prompts, expected):
    eng = engine(smollm2)
    for ids, want in zip(prompts, expected):
        assert eng.generate([ids], greedy())[0].token_ids == want
    again = eng.generate(prompts, greedy())  # every prompt is now cached but its last token
    for ids, out, want in zip(prompts, again, expected):
        assert out.token_ids == want
        assert out.cached_tokens == len(ids) - 1
    # the shared system prompt was computed once: the later questions found it cached
    first = eng.generate([prompts[0]], greedy())[0]
    assert first.prompt_tokens == len(prompts[0])


@pytest.mark.slow
def test_one_batch(smollm2, prompts, expected):
    outs = engine(smollm2).generate(prompts, greedy())
    assert [o.token_ids for o in outs] == expected
    # the system prompt was computed once and reused within the batch, to the token
    common = next(i for i, (a, b) in enumerate(zip(prompts[0], prompts[1])) if a != b)
    assert common > 60
    assert all(c >= common for c in sorted(o.cached_tokens for o in outs[:len(QUESTIONS)])[1:])


@pytest.mark.slow
def test_small_cache_preempts_and_still_matches(smollm2, prompts, expected):
    """Too few blocks for the batch: sequences are preempted and recomputed, outputs unchanged."""
    eng = engine(smollm2, blocks=24, token_budget=64)
    outs = eng.generate(prompts, greedy())
    assert [o.token_ids for o in outs] == expected


@pytest.mark.slow
def test_disk_cache_in_a_new_process(smollm2, prompts, expected, tmp_path):
    eng = engine(smollm2, disk_cache=str(tmp_path))
    assert eng.generate(prompts[:2], greedy())[0].token_ids == expected[0]
    assert eng.persist() > 0
    script = f"""
import json, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_generate import engine, greedy
eng = engine({str(smollm2)!r}, disk_cache={str(tmp_path)!r})
outs = eng.generate(json.loads(sys.argv[1]), greedy())
print(json.dumps([[o.token_ids, o.cached_tokens] for o in outs]))
"""
    run = subprocess.run([sys.executable, "-c", script, json.dumps(prompts[:2])], capture_output=True,
                         text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    for (tokens, cached), ids, want in zip(got, prompts, expected):
        assert tokens == want
        assert cached >= (len(ids) - 1) // 16 * 16 - 16  # all its full blocks but the last came from disk


@pytest.mark.slow
def test_sampling_is_seeded_per_request(smollm2, prompts):
    from kb.rag.sampling import SamplingParams

    p = SamplingParams(max_tokens=12, temperature=0.8, top_k=50, top_p=0.9, repetition_penalty=1.1, seed=7)
    eng = engine(smollm2)
    alone = eng.generate([prompts[5]], p)[0].token_ids
    batched = eng.generate([prompts[6], prompts[5]], [SamplingParams(max_tokens=12, temperature=1.0, seed=1), p])
    assert batched[1].token_ids == alone


@pytest.mark.slow
def test_stop_strings_and_max_tokens(smollm2, prompts, expected):
    from transformers import AutoTokenizer

    from kb.rag.sampling import SamplingParams

    tok = AutoTokenizer.from_pretrained(smollm2)
    full = tok.decode(expected[6])
    stop = full.strip().split()[2]
    out = engine(smollm2).generate([prompts[6]], SamplingParams(max_tokens=NEW, stop=(stop,)))[0]
    assert out.finish_reason == "stop" and stop not in out.text and full.startswith(out.text)
    out = engine(smollm2).generate([prompts[6]], SamplingParams(max_tokens=3))[0]
    assert out.finish_reason == "length" and out.token_ids == expected[6][:3]


def test_engines_are_never_frozen_so_a_dropped_one_is_collected():
    """The first engine freezes what the process holds out of the garbage collector's full
    passes; engines are never frozen, so one dropped while another runs, held only by a
    reference cycle (as CUDA graphs hold their runner), is still reclaimed by a collection."""
    import gc
    import weakref

    from tiny import random_engine
    from transformers import AutoModelForCausalLM, LlamaConfig

    from kb.rag.decoder import ModelConfig

    shape = dict(architectures=["LlamaForCausalLM"], vocab_size=64, hidden_size=32, intermediate_size=64,
                 num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
    weights = AutoModelForCausalLM.from_config(LlamaConfig(**shape)).state_dict()

    def make():
        return random_engine(ModelConfig.from_dict(shape), weights, blocks=8)
    first = make()
    assert gc.get_freeze_count() > 0
    first.runner.cycle = first.runner
    pool = weakref.ref(first.pool)
    second = make()
    del first
    gc.collect()
    assert pool() is None and second.pool is not None


def test_a_lone_prompts_chunk_fits_the_memory_the_pool_left():
    """Qwen2.5-0.5B's shape in bf16: about 77 KB of activations a token, counted twice."""
    from kb.rag.decoder import ModelConfig
    from kb.rag.runner import LONG_CHUNK, fitting_chunk

    mc = ModelConfig.from_dict(dict(architectures=["Qwen2ForCausalLM"], vocab_size=151936, hidden_size=896,
                                    intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                                    num_key_value_heads=2, max_position_embeddings=32768))
    assert fitting_chunk(10 * 2**30, mc, torch.bfloat16, 8192) == LONG_CHUNK == 32768
    assert fitting_chunk(2 * 2**30, mc, torch.bfloat16, 8192) == 8192  # 16,384 tokens would take 2.5 GB
    assert fitting_chunk(3 * 2**30, mc, torch.bfloat16, 8192) == 16384
    assert fitting_chunk(2**20, mc, torch.bfloat16, 8192) == 8192  # never below the budget
