"""The store and everything that fills and searches it: readers, chunker, BM25, indexer, query."""
