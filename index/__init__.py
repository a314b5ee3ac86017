"""The store (its data layer, store/) and everything that fills and searches it: the indexer and its
phases, formats, chunker, analyzer, BM25, vector indexes, search, status and check."""
