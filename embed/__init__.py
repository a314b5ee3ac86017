"""The embedding model: its tokenizer (shared with the chunker) and, later, the encoder."""
