"""kb's Triton kernels against the torch reference on fresh random inputs: ragged lengths, block
boundaries, cached prefixes, GQA ratios. On a GPU they run natively; on the CPU through Triton's
interpreter (TRITON_INTERPRET=1, set before triton is imported), where triton is installed."""

import os

import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
triton = pytest.importorskip("triton")

from kb.kernels import fused_ref  # noqa: E402
from kb.kernels.paged_attention_ref import attend, store_kv as store_ref  # noqa: E402
from kb.rag.batch import Batch  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
# Triton 3.6's interpreter cannot run a loop whose bound is loaded from memory under NumPy 2 (it
# converts a 1-element array to an int), which the attention kernels do: those run on a GPU, and
# one test runs the extend kernel through the interpreter of Triton 3.9 and later.
paged = pytest.mark.gpu(reason="attention kernels: GPU only (interpreter limit)")
TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2}


def setup(q_lens, ctx_lens, heads, kv_heads, dim=64, bs=16, dtype=torch.float32, seed=0, runs=False):
    """Blocks scattered, not in order; with `runs`, each sequence's are consecutive ids (the
    sequences from the pool's end down, past 3 unused blocks)."""
    g = torch.Generator().manual_seed(seed)
    need = sum((n + bs - 1) // bs for n in ctx_lens)
    blocks = torch.randperm(need + 3, generator=g)[:need].tolist()
    tables, at = [], 0
    for n in ctx_lens:
        k = (n + bs - 1) // bs
        tables.append(list(range(need + 3 - at - k, need + 3 - at)) if runs else blocks[at:at + k])
        at += k
    shape = (need + 3, bs, kv_heads, dim)
    kc = torch.randn(shape, generator=g).to(DEVICE, dtype)
    vc = torch.randn(shape, generator=g).to(DEVICE, dtype)
    t = sum(q_lens)
    q = torch.randn((t, heads, dim), generator=g).to(DEVICE, dtype)
    k = torch.randn((t, kv_heads, dim), generator=g).to(DEVICE, dtype)
    v = torch.randn((t, kv_heads, dim), generator=g).to(DEVICE, dtype)
    return Batch.build(q_lens, ctx_lens, tables, bs, DEVICE), q, k, v, kc, vc


def reference(q, kc, vc, batch: Batch, scale: float):
    return attend(q, kc, vc, batch.block_tables, batch.q_lens, batch.ctx_lens, scale)


def decode_kernel(q, kc, vc, batch: Batch, scale: float, **kw):
    from kb.kernels.paged_decode import decode

    return decode(q, kc, vc, batch.block_tables, batch.ctx, scale, batch.skip, batch.members, batch.prefix_tiles, **kw)


def close(a, b, dtype):
    err = ((a.float() - b.float()).abs().max() / b.float().abs().max().clamp(min=1e-6)).item()
    assert err <= TOL[dtype], err


CASES = [  # (q_lens, ctx_lens, heads, kv_heads)
    ([7], [7], 4, 4),  # plain prefill, one sequence, MHA
    ([5, 33, 16], [5, 50, 16 + 17], 6, 2),  # ragged, cached prefixes, GQA 3
    ([1, 64, 3], [129, 64, 200], 8, 1),  # mixed decode and prefill, MQA, block boundaries
]


@paged
@pytest.mark.parametrize("splits", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("q_lens, ctx_lens, heads, kv_heads", CASES)
def test_store_and_extend_match_reference(q_lens, ctx_lens, heads, kv_heads, dtype, splits):
    from kb.kernels.paged_attention import extend, store_kv

    batch, q, k, v, kc, vc = setup(q_lens, ctx_lens, heads, kv_heads, dtype=dtype)
    kc2, vc2 = kc.clone(), vc.clone()
    store_ref(kc, vc, k, v, batch.slots)
    store_kv(kc2, vc2, k, v, batch.slots)
    assert torch.equal(kc, kc2) and torch.equal(vc, vc2)
    close(extend(q, kc, vc, batch.block_tables, batch.cu_q, batch.ctx, batch.tiles(16), 0.125, block_m=16,
                 block_n=16, splits=splits),
          reference(q, kc, vc, batch, 0.125), dtype)


def check_extend(q_lens, ctx_lens, heads, kv_heads, dtype, splits=1, runs=False):
    """The extend kernel in 16-query, 16-key tiles against the reference; `runs`: each sequence's
    blocks consecutive, read through the kernel's `contiguous` path."""
    from kb.kernels.paged_attention import extend

    batch, q, k, v, kc, vc = setup(q_lens, ctx_lens, heads, kv_heads, dtype=dtype, runs=runs)
    assert batch.contiguous() == runs
    close(extend(q, kc, vc, batch.block_tables, batch.cu_q, batch.ctx, batch.tiles(16), 0.125, block_m=16,
                 block_n=16, splits=splits, contiguous=runs), reference(q, kc, vc, batch, 0.125), dtype)


@paged
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("q_lens, ctx_lens, heads, kv_heads", CASES)
def test_extend_over_consecutive_blocks_matches_reference(q_lens, ctx_lens, heads, kv_heads, dtype):
    """`contiguous`: each sequence's keys addressed from its first block, without the gather."""
    check_extend(q_lens, ctx_lens, heads, kv_heads, dtype, runs=True)


@pytest.mark.skipif(DEVICE.type == "cuda", reason="on a GPU the tests above run the kernel natively")
@pytest.mark.skipif(tuple(map(int, triton.__version__.split(".")[:2])) < (3, 9),
                    reason="Triton's interpreter runs the attention kernels from 3.9 on")
def test_extend_in_the_interpreter_matches_reference():
    """Without a GPU, the extend kernel through Triton's interpreter (fp32: its bf16 products are
    wrong): blocks scattered, split over 3 programs, and in runs (`contiguous`). Each program runs
    in turn there: a few cases keep it to ~10 s."""
    check_extend(*CASES[1], torch.float32, splits=3)
    check_extend(*CASES[2], torch.float32)
    check_extend(*CASES[2], torch.float32, runs=True)


@paged
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("runs", [False, True])
@pytest.mark.parametrize("dim", [64, 128])
def test_long_step_settings_match_reference(dim, runs, dtype):
    """A long prompt's chunk (kb.kernels.paged_attention.settings: bigger tiles, 8 warps) after a
    cached prefix, two sequences, GQA 7 as Qwen2.5-7B's; their blocks scattered, or each in one run;
    fp32 too (a GPU engine may run in fp32: its tiles must fit in shared memory)."""
    from kb.kernels.paged_attention import LONG_STEP, extend, settings

    q_lens = [LONG_STEP - 100, 300]
    batch, q, k, v, kc, vc = setup(q_lens, [q_lens[0] + 777, 300], 14, 2, dim=dim, dtype=dtype, runs=runs)
    launch = settings(q.shape[0], dim, batch.contiguous, q.element_size())
    assert launch["block_m"] == 128 and launch["contiguous"] == runs
    close(extend(q, kc, vc, batch.block_tables, batch.cu_q, batch.ctx, batch.tiles(launch["block_m"]), 0.125,
                 **launch), reference(q, kc, vc, batch, 0.125), dtype)


def test_long_steps_take_run_tiles_only_where_they_fit():
    """Over one run of blocks a long bf16 step takes LONG_RUN's tiles; fp32 keeps LONG's, whose
    shared memory fits a Hopper block (LONG_RUN's at dim 128 would not); short steps neither."""
    from kb.kernels.paged_attention import LONG, LONG_RUN, LONG_STEP, settings

    assert settings(LONG_STEP, 128, lambda: True) == dict(LONG_RUN[128], contiguous=True)
    assert settings(LONG_STEP, 128, lambda: True, itemsize=4) == dict(LONG[128], contiguous=True)
    assert settings(LONG_STEP, 128, lambda: False) == dict(LONG[128], contiguous=False)
    assert "contiguous" not in settings(LONG_STEP - 1, 128, lambda: 1 / 0)  # not even asked


@paged
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("ctx_lens, heads, kv_heads", [([1], 2, 2), ([17, 300, 64], 14, 2), ([513, 31], 9, 3)])
def test_decode_matches_reference(ctx_lens, heads, kv_heads, dtype):
    batch, q, k, v, kc, vc = setup([1] * len(ctx_lens), ctx_lens, heads, kv_heads, dtype=dtype)
    ref = reference(q, kc, vc, batch, 0.125)
    for splits in (0, 1, 8, 64):  # 64: more shares than some contexts have key tiles
        close(decode_kernel(q, kc, vc, batch, 0.125, splits=splits, block_n=16), ref, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("tokens, size", [(1, 64), (37, 896), (5, 1000)])  # 1000: not a power of two
def test_rms_norm_matches_reference(tokens, size, dtype):
    from kb.kernels.fused import rms_norm

    g = torch.Generator().manual_seed(tokens)
    x = torch.randn((tokens, size), generator=g).to(DEVICE, dtype)
    res = torch.randn((tokens, size), generator=g).to(DEVICE, dtype)
    weight = torch.randn(size, generator=g).to(DEVICE, dtype)
    with torch.inference_mode():
        close(rms_norm(x, weight, 1e-6)[0], fused_ref.rms_norm(x, weight, 1e-6)[0], dtype)
        want, want_res = fused_ref.rms_norm(x, weight, 1e-6, res)
        res2 = res.clone()
        out, got_res = rms_norm(x, weight, 1e-6, res2)
    close(out, want, dtype)
    assert got_res is res2  # the residual stream, updated in place
    close(res2, want_res, dtype)  # (Triton's interpreter rounds bf16 down, a GPU to nearest)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("q_lens, ctx_lens, heads, kv_heads", CASES)
def test_rope_store_matches_reference(q_lens, ctx_lens, heads, kv_heads, dtype):
    from kb.kernels.fused import rope_store

    batch, q, k, v, kc, vc = setup(q_lens, ctx_lens, heads, kv_heads, dtype=dtype)
    dim, t = q.shape[-1], q.shape[0]
    qkv = torch.cat([q.flatten(1), k.flatten(1), v.flatten(1)], dim=1)
    angles = torch.rand((t, dim // 2), generator=torch.Generator().manual_seed(5)) * 100
    cos = torch.cat([angles.cos()] * 2, -1).to(DEVICE, dtype)
    sin = torch.cat([angles.sin()] * 2, -1).to(DEVICE, dtype)
    kc2, vc2 = kc.clone(), vc.clone()
    rq = fused_ref.rope_store(qkv, cos, sin, kc, vc, batch.slots, heads, kv_heads)
    close(rope_store(qkv, cos, sin, kc2, vc2, batch.slots, heads, kv_heads), rq, dtype)
    close(kc2, kc, dtype)
    assert torch.equal(vc2, vc)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_silu_mul_matches_reference(dtype):
    from kb.kernels.fused import silu_mul

    x = torch.randn((9, 2 * 1500), generator=torch.Generator().manual_seed(2)).to(DEVICE, dtype)
    close(silu_mul(x), fused_ref.silu_mul(x), dtype)


@paged
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("heads, kv_heads", [(4, 4), (14, 2)])
def test_decode_with_shared_prefixes_matches_reference(heads, kv_heads, dtype):
    """Cascade decode: 67 sequences share a 5-block prefix (two tiles of the prefix pass), two
    share 2 blocks, one shares nothing; the planned batch and a CUDA graph's fixed-grid layout
    (padded with empty tiles) both agree with the reference."""
    from kb.rag.batch import host_arrays, pack, shared_prefixes

    g = torch.Generator().manual_seed(1)
    bs, dim, n = 16, 64, 70
    prefixes, fresh, tables, ctx = ([0, 1, 2, 3, 4], [5, 6], []), 7, [], []
    for i in range(n):
        own = 1 + (i * 7) % 40
        pre = prefixes[0 if i < 67 else 1 if i < 69 else 2]
        blocks = list(range(fresh, fresh + -(-own // bs)))
        fresh += len(blocks)
        tables.append(pre + blocks)
        ctx.append(len(pre) * bs + own)
    kc = torch.randn((fresh, bs, kv_heads, dim), generator=g).to(DEVICE, dtype)
    vc = torch.randn((fresh, bs, kv_heads, dim), generator=g).to(DEVICE, dtype)
    q = torch.randn((n, heads, dim), generator=g).to(DEVICE, dtype)
    plain = Batch.build([1] * n, ctx, tables, bs, DEVICE)
    ref = reference(q, kc, vc, plain, 0.125)
    batch = Batch.build([1] * n, ctx, tables, bs, DEVICE, prefix_tile=64)
    assert batch.prefix_tiles.shape[0] == 3 and int(batch.skip[0]) == 80 and int(batch.skip[-1]) == 0
    close(decode_kernel(q, kc, vc, batch, 0.125, splits=4, block_n=16), ref, dtype)
    h = host_arrays([1] * n, ctx, tables, bs, width=16)
    h.update(shared_prefixes(h["tables"], h["ctx"], bs, 64, max_tiles=6))
    longs, ints = (torch.from_numpy(a).to(DEVICE) for a in pack(h, None))
    fixed = Batch.unpack([1] * n, ctx, longs, ints, prefix_tiles=6)
    close(decode_kernel(q, kc, vc, fixed, 0.125), ref, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("tokens, hidden, heads, kv_heads, dim", [(1, 1100, 2, 1, 64), (5, 200, 6, 2, 32),
                                                                  (16, 128, 4, 4, 128)])
def test_decode_layer_kernels_match_reference(tokens, hidden, heads, kv_heads, dim, dtype):
    """The fused decode-step kernels (norm + qkv + bias + rotary + KV store; projection + residual;
    norm + gate/up + SwiGLU) on 1 to 16 tokens, hidden sizes off the tile (1,100 in two loads for
    one token, 200), GQA and MHA."""
    from kb.kernels import decode_layer, decode_layer_ref

    if dtype == torch.bfloat16 and DEVICE.type == "cpu":
        pytest.skip("Triton's interpreter multiplies bf16 tiles wrongly (tl.dot): bf16 is checked on a GPU")
    g = torch.Generator().manual_seed(tokens)

    def rand(*shape, scale=1.0):
        return (torch.randn(shape, generator=g) * scale).to(DEVICE, dtype)
    x, norm = rand(tokens, hidden), rand(hidden)
    w, bias = rand((heads + 2 * kv_heads) * dim, hidden, scale=hidden ** -0.5), rand((heads + 2 * kv_heads) * dim)
    angles = torch.rand((tokens, dim // 2), generator=g) * 100
    cos = torch.cat([angles.cos()] * 2, -1).to(DEVICE, dtype)
    sin = torch.cat([angles.sin()] * 2, -1).to(DEVICE, dtype)
    kc, vc = rand(9, 4, kv_heads, dim), rand(9, 4, kv_heads, dim)
    slots = torch.randperm(36, generator=g)[:tokens].to(DEVICE)
    kc2, vc2 = kc.clone(), vc.clone()
    with torch.inference_mode():
        for b in (bias, None):
            close(decode_layer.norm_qkv_rope_store(x, norm, 1e-6, w, b, cos, sin, kc, vc, slots, heads, kv_heads),
                  decode_layer_ref.norm_qkv_rope_store(x, norm, 1e-6, w, b, cos, sin, kc2, vc2, slots, heads,
                                                       kv_heads), dtype)
            close(kc, kc2, dtype)
            close(vc, vc2, dtype)
        wo, wgu = rand(hidden, 3 * dim, scale=dim ** -0.5), rand(2 * 300, hidden, scale=hidden ** -0.5)
        a = rand(tokens, 3 * dim)
        close(decode_layer.linear_residual(a, wo, x), decode_layer_ref.linear_residual(a, wo, x), dtype)
        close(decode_layer.norm_gate_up(x, norm, 1e-6, wgu), decode_layer_ref.norm_gate_up(x, norm, 1e-6, wgu), dtype)
        h, wd = rand(tokens, 300), rand(hidden, 300, scale=300 ** -0.5)  # the down projection, in 128-column loads
        close(decode_layer.linear_residual(h, wd, x, block_k=128), decode_layer_ref.linear_residual(h, wd, x), dtype)


def test_step_sized_arguments_name_the_kernels_parameters():
    """The attention kernels are compiled once for every step's shape: their step-sized ints and
    index arrays are named as not to specialise on. Triton ignores a name that is no parameter,
    so a renamed argument would bring back a compile inside some later step."""
    import inspect

    from kb.kernels import paged_attention, paged_decode

    for module in (paged_attention, paged_decode):
        for name, options in module.STEP_SIZED.items():
            params = set(inspect.signature(getattr(module, name).fn).parameters)
            named = {n for names in options.values() for n in names}
            assert named and named <= params, (name, named - params)
    assert {"n_tokens", "stride_table", "ctx_ptr", "table_ptr"} <= {
        n for names in paged_attention.STEP_SIZED["_extend"].values() for n in names}
