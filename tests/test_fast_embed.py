"""The embed layer in the fast tier: the encoder's contract (shapes, normalisation, framing, the
model's input limit, determinism) on the tiny encoder (tests/tiny.py). Its agreement with
sentence-transformers on the real model is the slow tier's (test_vectors.py)."""

from __future__ import annotations

import numpy as np
import pytest

from kb.embed.encoder import EmbedConfig, Encoder, describe
from tiny import HIDDEN, write_tiny_encoder


@pytest.fixture(scope="module")
def encoder(tiny_encoder) -> Encoder:
    return Encoder(EmbedConfig(model=str(tiny_encoder), device="cpu"))


def test_spec_is_known_from_the_files(tiny_encoder):
    spec = describe(EmbedConfig(model=str(tiny_encoder)))
    assert spec.dims == HIDDEN and spec.fingerprint["model"] == "tiny-bert"
    assert (spec.fingerprint["pooling"], spec.fingerprint["max_tokens"]) == ("mean", 256)


def test_passages_are_unit_vectors_of_the_model_dims(encoder):
    ids = [encoder.tokenizer.encode(t).ids for t in ("the ferry leaves at noon", "a", "sourdough starter")]
    vectors = encoder.embed_passages(ids)
    assert vectors.shape == (3, HIDDEN) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert not np.allclose(vectors[0], vectors[2])


def test_a_query_is_framed_as_a_passage_of_its_ids(encoder):
    text = "how long does the ferry take"
    passage = encoder.embed_passages([encoder.tokenizer.encode(text).ids])[0]
    np.testing.assert_allclose(encoder.embed_query(text), passage, atol=1e-6)


def test_a_long_passage_is_cut_to_the_models_limit(encoder):
    ids = list(range(1000, 1000 + 600))
    room = encoder.max_tokens - len(encoder.head) - len(encoder.tail)
    long, cut = encoder.embed_passages([ids, ids[:room]])
    np.testing.assert_allclose(long, cut, atol=1e-6)


def test_same_seed_same_vectors(tmp_path, encoder, tiny_encoder):
    ids = [[2000, 2001, 2002], [3000]]
    again = Encoder(EmbedConfig(model=str(write_tiny_encoder(tmp_path / "again")), device="cpu"))
    other = Encoder(EmbedConfig(model=str(write_tiny_encoder(tmp_path / "other", seed=1)), device="cpu"))
    np.testing.assert_array_equal(again.embed_passages(ids), encoder.embed_passages(ids))
    assert not np.allclose(other.embed_passages(ids), encoder.embed_passages(ids))
    assert (tmp_path / "again" / "model.safetensors").read_bytes() == \
        (tiny_encoder / "model.safetensors").read_bytes()
