"""kb's packed Gemma 3 encoder (kb.embed.gemma) against Hugging Face's forward of the same random
weights, text by text: the same mean-pooled states, positions restarting per text, both rotary
bases and bidirectional attention. On the CPU its attention runs text by text through SDPA; on a
GPU through varlen flash attention (bench/embed_gemma_gpu.py checks that against fp32)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")


def test_packed_texts_pool_as_hugging_face_does_one_by_one():
    from transformers import Gemma3TextConfig, Gemma3TextModel

    from kb.embed.gemma import PackedGemma, supported

    cfg = Gemma3TextConfig(vocab_size=500, hidden_size=64, intermediate_size=96, num_hidden_layers=4,
                           num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=256,
                           use_bidirectional_attention=True, sliding_window=128, query_pre_attn_scalar=16,
                           layer_types=["sliding_attention", "full_attention"] * 2)
    torch.manual_seed(0)
    model = Gemma3TextModel(cfg).eval()
    assert supported(model.config)
    rng = np.random.default_rng(0)
    inputs = [rng.integers(3, 500, n).astype(np.int32) for n in (5, 40, 17, 64, 1)]
    packed = PackedGemma(model)
    # bidirectional: transformers makes the window 128 // 2 + 1, within which a text sees all of itself
    assert packed.fits(inputs) and not packed.fits([np.zeros(66, np.int32)])
    ours = packed.pool(inputs, batch_tokens=64)  # several batches, one of a single long text
    with torch.inference_mode():
        ref = torch.stack([model(input_ids=torch.from_numpy(x).long()[None]).last_hidden_state[0].mean(0)
                           for x in inputs])
    torch.testing.assert_close(ours, ref, atol=2e-5, rtol=1e-4)
