"""`kb index --embed-backend URL`: vectors from an OpenAI-compatible embeddings endpoint (TEI, vLLM,
Infinity, kb serve) instead of a local model. The store records the model's name and dimension
(and the URL, so that `kb query` embeds its queries at the same server); chunking still measures
texts with kb's default tokenizer. Texts go out as they are, in batches of `BATCH`, retried by
kb.remote; the API key comes from the environment and is never stored.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

BATCH = 64  # texts per request
MAX_TOKENS = 512  # tokens kb assumes the server's model reads of a text (most embedding models)


def _vectors(cfg, texts: list[str]) -> np.ndarray:
    from kb import remote

    out = []
    for i in range(0, len(texts), BATCH):
        body = {"input": texts[i:i + BATCH], **({"model": cfg.backend_model} if cfg.backend_model else {})}
        data = sorted(remote.post(cfg.backend, "/embeddings", body).get("data") or [], key=lambda d: d["index"])
        if len(data) != len(body["input"]):
            from kb.errors import Unavailable

            raise Unavailable(f"{cfg.backend} returned {len(data)} embeddings for {len(body['input'])} texts")
        out.append(np.asarray([d["embedding"] for d in data], dtype=np.float32))
    vecs = np.vstack(out)
    if cfg.dims:
        vecs = vecs[:, :cfg.dims]
    if cfg.normalize:
        vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
    return vecs


@lru_cache(maxsize=4)
def describe(cfg):
    """kb.embed.encoder.EmbedSpec of a backend: its dimension asked of the server (one text), once
    per process (an index run describes its encoder several times)."""
    from kb.embed.encoder import EmbedSpec

    dims = cfg.dims or _vectors(cfg.__class__(**{**cfg.stored(), "dims": 0}), ["kb"]).shape[1]
    return EmbedSpec.of({"model": cfg.backend_model or "default", "api": "openai-embeddings", "dims": dims,
                         "normalize": cfg.normalize, "query_prefix": cfg.query_prefix,
                         "passage_prefix": cfg.passage_prefix, "max_tokens": MAX_TOKENS})


class RemoteEncoder:
    """The encoder interface the index and the search use, over the server."""

    packed = False  # never the GPU feed's
    device = "remote"

    def __init__(self, cfg):
        from kb.embed.tokenizer import load_tokenizer

        spec = describe(cfg)
        self.cfg, self.fingerprint, self.key, self.dims = cfg, spec.fingerprint, spec.key, spec.dims
        self.max_tokens = MAX_TOKENS
        self.tokenizer = load_tokenizer(None)  # the chunker's, for callers that count tokens

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """(n, dims) float32 of passages given as text."""
        return _vectors(self.cfg, [self.cfg.passage_prefix + t for t in texts])

    def embed_query(self, text: str) -> np.ndarray:
        return _vectors(self.cfg, [self.cfg.query_prefix + text])[0]
