"""The packed encoder's Triton kernels against their torch references on fresh random ragged inputs,
and the packed encoder (with either) against Hugging Face's padded forward for the BERT, XLM-R and
MPNet families. On a GPU the kernels run natively; on the CPU through Triton's interpreter."""

import os

import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton")

from kb.kernels import encoder_layers_ref as R  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
TOL = {torch.float32: 2e-5, torch.bfloat16: 2e-2}
# Triton 3.6's interpreter computes bf16 products wrong (NumPy has no bf16): bf16 on a GPU only.
DTYPES = [torch.float32] + ([torch.bfloat16] if DEVICE.type == "cuda" else [])


def close(a, b, dtype):
    err = ((a.float() - b.float()).abs().max() / b.float().abs().max().clamp(min=1e-6)).item()
    assert err <= TOL[dtype], err


def ragged(lengths, block_m=64):
    from kb.kernels.encoder_layers import attention_tiles

    cu = torch.tensor([0] + torch.tensor(lengths).cumsum(0).tolist(), dtype=torch.int32, device=DEVICE)
    seqs, starts = attention_tiles(lengths, block_m)
    tiles = (torch.tensor(seqs, dtype=torch.int32, device=DEVICE), torch.tensor(starts, dtype=torch.int32,
                                                                                 device=DEVICE))
    return cu, tiles


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("lengths, heads, dim, bias", [
    ([1, 64, 65, 130], 2, 32, False),  # tile boundaries, a one-token sequence
    ([7, 200, 33], 3, 64, True),  # MPNet's relative bias, distances past the exact buckets
])
@pytest.mark.parametrize("block_m, block_n", [(64, 64), (128, 32)])
def test_varlen_attention_matches_reference(lengths, heads, dim, bias, dtype, block_m, block_n):
    from kb.kernels.encoder_layers import varlen_attention

    g = torch.Generator().manual_seed(len(lengths))
    qkv = torch.randn((sum(lengths), 3 * heads * dim), generator=g).to(DEVICE, dtype)
    rel = torch.randn((32, heads), generator=g).to(DEVICE, dtype) if bias else None
    cu, tiles = ragged(lengths, block_m)
    got = varlen_attention(qkv, cu, tiles, heads, rel_bias=rel, block_m=block_m, block_n=block_n)
    close(got, R.varlen_attention(qkv, cu, heads=heads, rel_bias=rel), dtype)


def test_relative_buckets_match_mpnet():
    transformers = pytest.importorskip("transformers")
    from transformers.models.mpnet.modeling_mpnet import MPNetEncoder

    rel = torch.arange(-300, 300)[None, :]
    assert torch.equal(R.relative_buckets(rel), MPNetEncoder.relative_position_bucket(rel))
    assert transformers  # imported for the skip


@pytest.mark.parametrize("dtype", DTYPES)
def test_norms_linear_and_pool_match_reference(dtype):
    from kb.kernels import encoder_layers as K

    g = torch.Generator().manual_seed(1)
    lengths, n, vocab = [3, 40, 1, 17], 48, 50
    cu, _ = ragged(lengths)
    t = sum(lengths)

    def rnd(*shape):
        return torch.randn(shape, generator=g).to(DEVICE, dtype)

    x, r, w, b = rnd(t, n), rnd(t, n), rnd(n), rnd(n)
    close(K.add_layer_norm(x, r, w, b, 1e-12), R.add_layer_norm(x, r, w, b, 1e-12), dtype)
    ids = torch.randint(0, vocab, (t,), generator=g, dtype=torch.int32).to(DEVICE)
    pos = torch.randint(0, 60, (t,), generator=g, dtype=torch.int32).to(DEVICE)
    args = (ids, pos, rnd(vocab, n), rnd(60, n), rnd(n), w, b, 1e-12)
    close(K.embed_layer_norm(*args), R.embed_layer_norm(*args), dtype)
    up_w, up_b = rnd(80, n), rnd(80)
    for gelu in (False, True):
        close(K.linear(x, up_w, up_b, gelu=gelu, block=(32, 32, 32), warps=4, stages=1),
              R.linear(x, up_w, up_b, gelu=gelu), dtype)
    for normalize in (False, True):
        close(K.mean_pool(x, cu, normalize), R.mean_pool(x, cu, normalize), dtype)


def tiny(family):
    transformers = pytest.importorskip("transformers")
    kw = dict(vocab_size=120, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96,
              max_position_embeddings=300)
    cfg = {"bert": transformers.BertConfig(**kw),
           "xlm-roberta": transformers.XLMRobertaConfig(pad_token_id=1, **kw),
           "mpnet": transformers.MPNetConfig(pad_token_id=1, **kw)}[family]
    torch.manual_seed(0)
    return transformers.AutoModel.from_config(cfg, attn_implementation="eager").eval()


def hf_mean(model, seqs):
    width = max(map(len, seqs))
    pad = model.config.pad_token_id or 0
    ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs])
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
    with torch.inference_mode():
        h = model(input_ids=ids, attention_mask=mask).last_hidden_state
    m = mask.unsqueeze(-1).float()
    return torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)


@pytest.mark.parametrize("ops", ["torch", "triton"])
@pytest.mark.parametrize("family", ["bert", "xlm-roberta", "mpnet"])
def test_packed_encoder_matches_hugging_face(family, ops):
    from kb.embed.packed import PackedEncoder

    model = tiny(family)
    g = torch.Generator().manual_seed(2)
    lengths = [5, 150, 1, 70]
    seqs = [torch.randint(3, 120, (n,), generator=g).tolist() for n in lengths]
    want = hf_mean(model, seqs)
    enc = PackedEncoder(model.to(DEVICE), ops=ops)
    cu, tiles = ragged(lengths, enc.attention["block_m"])
    ids = torch.tensor([i for s in seqs for i in s], dtype=torch.int32, device=DEVICE)
    pos = torch.tensor(enc.positions(lengths), dtype=torch.int32, device=DEVICE)
    with torch.inference_mode():
        got = enc.pool(enc.hidden(ids, pos, cu, tiles), cu, "mean", True)
    assert (got.cpu() - want).abs().max().item() < 1e-4


def test_pack_lays_out_inputs_positions_and_tiles():
    import numpy as np

    from kb.embed.pipeline import batches, pack

    seqs = [np.arange(10, 15), [7], np.arange(20, 100)]
    buf, sizes = pack(seqs, np.array([101]), np.array([102]), 70, pos_offset=2, block_m=64)
    ids, positions, cu, tile_seq, tile_m = np.split(buf, np.cumsum(sizes)[:-1])
    want = [[101, *range(10, 15), 102], [101, 7, 102], [101, *range(20, 90), 102]]
    assert ids.tolist() == [i for w in want for i in w]
    assert cu.tolist() == [0, 7, 10, 82]
    assert positions.tolist() == [p + 2 for w in want for p in range(len(w))]
    assert list(zip(tile_seq.tolist(), tile_m.tolist())) == [(0, 0), (1, 0), (2, 0), (2, 64)]
    got = batches(np.array([5, 300, 40, 41, 7]), 90)
    assert [b.tolist() for b in got] == [[0, 4, 2], [3], [1]]


def test_padded_batch_gives_the_vectors_of_the_unpadded_one():
    """A batch padded to a CUDA graph's fixed shape (padding tokens in no sequence, empty padding
    sequences, padding tiles of sequence -1) gives its texts the vectors of the batch unpadded,
    through the kernels themselves; and the padded shape always has room for the tiles."""
    import numpy as np

    from kb.embed.packed import PackedEncoder
    from kb.embed.pipeline import pack, padded_shape

    enc = PackedEncoder(tiny("bert").to(DEVICE), ops="triton")
    block_m = enc.attention["block_m"]
    g = torch.Generator().manual_seed(4)
    seqs = [torch.randint(3, 120, (int(n),), generator=g).tolist() for n in [1, 63, 64, 65, 140, 7]]

    def run(shape):
        buf, sizes = pack(seqs, np.array([101]), np.array([102]), 250, enc.pos_offset, block_m, shape)
        ids, positions, cu, tile_seq, tile_m = torch.from_numpy(buf).to(DEVICE).split(sizes)
        with torch.inference_mode():
            return enc.pool(enc.hidden(ids, positions, cu, (tile_seq, tile_m)), cu, "mean", True).cpu()

    want = run(None)
    shape = padded_shape(512, block_m)
    assert shape[1] == 16
    got = run(shape)
    assert got.shape == (16, want.shape[1])
    assert (got[:len(seqs)] - want).abs().max().item() < 1e-5
    assert not got[len(seqs):].any()  # empty sequences pool to zero
    with pytest.raises(ValueError):
        pack(seqs, np.array([101]), np.array([102]), 250, enc.pos_offset, block_m, (300, 16, 80))
    for _ in range(200):  # worst cases of the tile bound: many texts just past a tile's end
        n = int(torch.randint(1, 300, (1,), generator=g))
        lengths = [block_m + 1] * n if n % 2 else torch.randint(1, 512, (n,), generator=g).tolist()
        tokens, seqs_room, tiles = padded_shape(sum(lengths), block_m)
        assert n > seqs_room or sum(-(-x // block_m) for x in lengths) <= tiles


@pytest.mark.gpu(reason="the packed pipeline pins memory and waits on CUDA events")
def test_stream_fed_in_pieces_matches_one_call():
    """What the GPU feed does while `kb index` reads (a stream fed batch by batch, results coming
    back a call or two later) gives the vectors of one embed_packed call, each row its own text's."""
    import numpy as np

    from kb.embed.packed import PackedEncoder
    from kb.embed.pipeline import PackedStream, embed_packed

    enc = PackedEncoder(tiny("bert").to(DEVICE), ops="triton")
    g = torch.Generator().manual_seed(3)
    seqs = [torch.randint(3, 120, (int(n),), generator=g).tolist()
            for n in torch.randint(1, 280, (40,), generator=g)]

    def stream():
        return PackedStream(enc, [101], [102], 250, DEVICE, "mean", True)

    want = embed_packed(stream(), seqs, 1024)
    s, got = stream(), {}
    for i in range(0, len(seqs), 7):
        got.update(s.submit(seqs[i:i + 7], i))
    got.update(s.drain())
    assert sorted(got) == list(range(0, len(seqs), 7))
    assert np.abs(np.concatenate([got[i] for i in sorted(got)]) - want).max() < 1e-4


@pytest.mark.gpu(reason="CUDA graphs")
def test_stream_of_cuda_graphs_matches_eager():
    """Batches replayed as CUDA graph (one graph, replayed between eager batches: too short, or
    too many texts for its shape) give the vectors of the eager stream."""
    import numpy as np

    from kb.embed.packed import PackedEncoder
    from kb.embed.pipeline import PackedStream

    enc = PackedEncoder(tiny("bert").to(DEVICE), ops="triton")
    g = torch.Generator().manual_seed(5)
    pieces = []  # 4 long texts (608-968 tokens, framed): graph; 70-75 short ones or 2: eager
    for n, low, high in [(4, 150, 241), (70, 6, 11), (2, 1, 100), (4, 150, 241), (75, 6, 11), (4, 150, 241)]:
        pieces.append([torch.randint(3, 120, (int(x),), generator=g).tolist()
                       for x in torch.randint(low, high, (n,), generator=g)])

    def run(graph_tokens):
        s, got = PackedStream(enc, [101], [102], 250, DEVICE, "mean", True, graph_tokens=graph_tokens), {}
        for i, seqs in enumerate(pieces):
            got.update(s.submit(seqs, i))
        got.update(s.drain())
        return s, [got[i] for i in range(len(pieces))]

    _, want = run(None)
    s, got = run(1024)
    assert s.graph is not None and s.replays == 3
    for w, v in zip(want, got):
        assert v.shape == w.shape
        assert np.abs(v - w).max() < 1e-4
