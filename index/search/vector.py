"""The vector retriever: the query embedded by the store's encoder, searched in its vector index
(flat, hnsw or ivf; kb.index.vectors), and the query's background similarity to random chunks,
which calibrated fusion reads the scores against. The model loads on first use only: for
BERT-family encoders a numpy forward over its memory-mapped weights (kb.embed.light), no torch."""

from __future__ import annotations

import json
import time

import numpy as np

from kb.errors import StoreIncompatible
from kb.index.search.fusion import keyword_style
from kb.index.search.results import Candidates
from kb.index.store import Store, lookup

class VectorRetriever:
    def __init__(self, store: Store, filter_depth: int, backend: str = "auto"):
        """`filter_depth`: with --path, this many times `depth` neighbours are read before filtering;
        `backend`: how queries are embedded (kb.embed.load_query_encoder)."""
        self.store, self.filter_depth, self.backend = store, filter_depth, backend
        self._encoder = None
        self._index = None  # (tag, index) of the store's data version
        self._background = None  # background.Background, with the encoder

    def load(self):
        """(query encoder, vector index) for the store's encoder; the encoder loads once."""
        from kb.index import vectors

        meta = json.loads(self.store.meta("embedding"))
        if self._encoder is None:
            self._load_encoder(meta)
        version = self.store.data_version
        if self._index is None or self._index[0].version != version:
            self._index = vectors.current(self.store, meta["key"], self._encoder.dims, "auto")
        return self._encoder, self._index[1]

    def _load_encoder(self, meta: dict) -> None:
        """The encoder that made the stored vectors (StoreIncompatible if the model found differs),
        and the background sample its queries are read against."""
        from kb.embed import load_query_encoder
        from kb.embed.encoder import EmbedConfig, describe
        from kb.index import background

        cfg = EmbedConfig(**meta["config"])
        spec = describe(cfg)
        if spec.key != meta["key"]:
            fp = meta["fingerprint"]
            raise StoreIncompatible(
                f"the vectors in {self.store.dir} were made by {fp['model']} ({fp['model_sha256']}, "
                f"{fp['dims']} dims); the model found now differs ({spec.fingerprint['model_sha256']}, "
                f"{spec.dims} dims): run `kb index --rebuild PATH...` to embed again")
        self._encoder = load_query_encoder(cfg, self.backend)
        # Random chunks (hash order is random) for each query's background similarity, topped
        # up with kb's generic passages in a store of fewer chunks (index/background.py).
        blobs = lookup.vector_sample(self.store.conn, meta["key"], background.SAMPLE)
        sample = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), self._encoder.dims)
        self._background = background.Background.load(self._encoder, sample, self.store.dir)

    def candidates(self, query: str, depth: int, allowed: np.ndarray | None,
                   timings: dict[str, float]) -> Candidates:
        """The `depth` nearest chunks (only those in `allowed`, if given). Adds `embed` and `vector`
        seconds to `timings`, and `load` when this call loaded torch and the model."""
        t0 = time.perf_counter()
        loaded = self._encoder is not None
        encoder, index = self.load()
        if not loaded:
            timings["load"] = time.perf_counter() - t0  # the model (and torch, where it runs it), once per process
        t0 = time.perf_counter()
        q = encoder.embed_query(query)
        t1 = time.perf_counter()
        ids, scores = index.search(q, depth * (self.filter_depth if allowed is not None else 1))
        if allowed is not None:
            keep = np.isin(ids, allowed)
            ids, scores = ids[keep][:depth], scores[keep][:depth]
        mean, spread = self._background.stats(q)
        timings.update(embed=t1 - t0, vector=time.perf_counter() - t1)
        return Candidates(ids, scores, mean, spread, keyword_style(query))
