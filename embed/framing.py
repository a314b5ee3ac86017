"""What every encoder does around its model, whichever runs it (torch, kb's packed kernels,
numpy): the special tokens and the query/document prompts put around a text's token ids, cut to
the model's length. Subclasses give `embed_inputs` (vectors of whole model inputs)."""

from __future__ import annotations

import numpy as np

from kb.embed import modules


class Framing:
    def _frame(self, cfg, spec) -> None:
        """Sets what the store and the search read of an encoder: cfg, fingerprint, key, dims,
        pooling, max_tokens, tokenizer, and the framing of queries and passages."""
        from kb.embed.tokenizer import load_tokenizer

        self.cfg = cfg
        self.fingerprint, self.key, self.dims = spec.fingerprint, spec.key, spec.dims
        self.pooling, self.max_tokens = spec.fingerprint["pooling"], spec.fingerprint["max_tokens"]
        self.tokenizer = load_tokenizer(cfg.model)
        self.head, self.tail = self.tokenizer.special_tokens()
        self.query_prefix, passage = spec.fingerprint["query_prefix"], spec.fingerprint["passage_prefix"]
        self._passage = self.tokenizer.encode(passage).ids if passage else []
        # A prompt ending in a space ("title: none | text: ") that SentencePiece joins to the text's
        # first word when both are tokenised together, as sentence-transformers does: kb glues them so
        self._glue = passage if passage and modules.prompt_joins(self.tokenizer, passage) else ""
        self._tail = np.asarray(self.tail, np.int32)

    def _framing(self, prefix: list[int]) -> tuple[list[int], int]:
        """(ids before a text's own: special tokens and the prefix, room left for the text's ids):
        the model reads head + ids[:room] + tail, which is (prefix + ids) cut to its length."""
        room = self.max_tokens - len(self.head) - len(self.tail)
        prefix = prefix[:room]
        return self.head + prefix, room - len(prefix)

    def _inputs(self, ids, prefix: list[int]) -> np.ndarray:
        """The model's input for a text's token ids."""
        if self._glue and prefix is self._passage and len(ids):
            k, word = modules.first_word(self.tokenizer, ids)
            prefix, ids = self.tokenizer.encode(self._glue + word).ids, ids[k:]
        head, room = self._framing(prefix)
        return np.concatenate((np.asarray(head, np.int32), np.asarray(ids, np.int32)[:room], self._tail))

    def embed_passages(self, id_lists) -> np.ndarray:
        """(n, dims) float32 for chunks given as the chunker's token ids (lists or int32 arrays)."""
        return self._embed(id_lists, self._passage)

    def embed_query(self, text: str) -> np.ndarray:
        return self._embed([self.tokenizer.encode(self.query_prefix + text).ids], [])[0]

    def _embed(self, id_lists, prefix: list[int]) -> np.ndarray:
        return self.embed_inputs([self._inputs(ids, prefix) for ids in id_lists])

    def embed_inputs(self, inputs: list[np.ndarray]) -> np.ndarray:
        raise NotImplementedError
