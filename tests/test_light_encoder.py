"""The numpy query encoder (kb.embed.light) against the torch encoder on the same folder: the
tiny BERT, the real MiniLM over many texts (cosine >= 0.9999), half-precision weights, and a
cold hybrid `kb query` that never imports torch."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import SAMPLE, kb
from kb.embed.encoder import EmbedConfig, Encoder
from kb.embed.light import LightEncoder, mapped_tensors, supported

ODD = ["", "C++", "os.path.join", "CMAKE_BUILD_TYPE", "naïve café déjà vu", "東京の天気", "a " * 400,
       "what is the capital of Australia?", "\ttabs\nand lines\r\n", "emoji 🚀 rocket"]


def _texts() -> list[str]:
    """Lines of the sample corpus (real prose and code) and the odd ones above."""
    lines = [ln.strip() for p in sorted(SAMPLE.rglob("*")) if p.is_file() and p.suffix in (".md", ".txt", ".py")
             for ln in p.read_text(errors="replace").splitlines() if len(ln.strip()) > 3]
    return lines[:300] + ODD


def _agree(cfg: EmbedConfig, texts: list[str]) -> float:
    """The least cosine between the two encoders' vectors, over queries and passages."""
    torch_enc, light = Encoder(cfg), LightEncoder(cfg)
    ids = [torch_enc.tokenizer.encode(t).ids for t in texts]
    a = np.vstack([torch_enc.embed_passages(ids), [torch_enc.embed_query(t) for t in texts]])
    b = np.vstack([light.embed_passages(ids), [light.embed_query(t) for t in texts]])
    assert a.shape == b.shape and b.dtype == np.float32
    return float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).min())


@pytest.mark.parametrize("pooling,dims", [("mean", 0), ("cls", 0), ("mean", 16)])
def test_tiny_bert_agrees_with_torch(tiny_encoder, pooling, dims):
    cfg = EmbedConfig(model=str(tiny_encoder), device="cpu", pooling=pooling, dims=dims)
    assert _agree(cfg, _texts()) >= 0.9999


def test_minilm_agrees_with_torch():
    assert _agree(EmbedConfig(device="cpu"), _texts()) >= 0.9999


def test_half_precision_weights_widen_to_float32(tmp_path):
    import torch
    from safetensors.torch import save_file

    weights = {"h": torch.randn(3, 5, dtype=torch.float16), "b": torch.randn(7, dtype=torch.bfloat16),
               "f": torch.randn(2, 2), "position_ids": torch.arange(4)}
    save_file(weights, str(tmp_path / "w.safetensors"))
    got = mapped_tensors(tmp_path / "w.safetensors")
    assert set(got) == {"h", "b", "f"}  # integer buffers are not weights
    for name, a in got.items():
        assert a.dtype == np.float32
        np.testing.assert_array_equal(a, weights[name].float().numpy())


def test_other_families_go_to_torch(tmp_path, tiny_encoder):
    assert supported(tiny_encoder)
    config = json.loads((tiny_encoder / "config.json").read_text())
    for change in ({"model_type": "roberta"}, {"hidden_act": "gelu_new"}, {"position_embedding_type": "relative_key"}):
        folder = tmp_path / next(iter(change.values()))
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({**config, **change}))
        (folder / "model.safetensors").write_bytes((tiny_encoder / "model.safetensors").read_bytes())
        assert not supported(folder)


COLD = """
import json, sys
from kb.cli.app import main
sys.argv = ["kb", "query", "how do I bake bread", "--db", sys.argv[1], "--json"]
try:
    main()
except SystemExit as e:
    print(json.dumps({"code": e.code, "torch": "torch" in sys.modules, "transformers": "transformers" in sys.modules}))
"""


@pytest.mark.slow
def test_a_cold_hybrid_query_does_not_import_torch(tmp_path, corpus, db, tiny_encoder):
    kb("index", corpus, "--db", db, "--model", tiny_encoder, "--quiet")
    proc = subprocess.run([sys.executable, "-c", COLD, str(db)], capture_output=True, text=True, timeout=600)
    result, facts = (json.loads(line) for line in proc.stdout.strip().splitlines()[-2:])
    assert facts == {"code": 0, "torch": False, "transformers": False}, proc.stderr
    assert result["mode"] == "hybrid" and result["results"]
    forced = json.loads(kb("query", "how do I bake bread", "--db", db, "--json",
                           env={"KB_QUERY_ENCODER": "torch"}).stdout)
    where = lambda r: [(h["path"], h["start_line"]) for h in r["results"]]
    assert where(forced) == where(result)
    bad = kb("query", "bread", "--db", db, "--query-encoder", "jax", check=2)
    assert "KB_QUERY_ENCODER" in bad.stderr and "Traceback" not in bad.stderr
