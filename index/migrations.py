"""Numbered schema migrations. `PRAGMA user_version` holds the number of the last one applied.

Append new migrations; never edit one that has shipped.
"""

MIGRATIONS: list[str] = [
    # 1: documents, chunks, the BM25 inverted index, metadata and run history.
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE documents (
        id INTEGER PRIMARY KEY,
        path TEXT NOT NULL UNIQUE,      -- absolute path of the file
        root TEXT NOT NULL,             -- the folder given to `kb index`; results show path relative to it
        kind TEXT NOT NULL,             -- markdown | text | rst | code | html | pdf
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        hash TEXT NOT NULL,             -- sha256 of the file's bytes
        indexed_at REAL NOT NULL,
        note TEXT                       -- why it has no chunks (binary, too large, ...), else NULL
    );
    CREATE TABLE chunks (
        id INTEGER PRIMARY KEY,
        doc_id INTEGER NOT NULL REFERENCES documents(id),
        seq INTEGER NOT NULL,           -- position of the chunk in its document
        start_line INTEGER NOT NULL,    -- 1-based, inclusive
        end_line INTEGER NOT NULL,
        heading TEXT NOT NULL,          -- heading path, ' > ' joined
        text TEXT NOT NULL,
        hash TEXT NOT NULL,             -- sha256 of text: the key of the embedding cache
        token_ids BLOB NOT NULL,        -- int32 ids of the embedding tokenizer, no special tokens
        n_terms INTEGER NOT NULL        -- BM25 document length (analysed terms)
    );
    CREATE INDEX chunks_doc ON chunks(doc_id);
    CREATE INDEX chunks_hash ON chunks(hash);
    CREATE TABLE terms (id INTEGER PRIMARY KEY, term TEXT NOT NULL UNIQUE);
    CREATE TABLE postings (
        term_id INTEGER NOT NULL,
        chunk_id INTEGER NOT NULL,
        tf INTEGER NOT NULL,
        PRIMARY KEY (term_id, chunk_id)
    ) WITHOUT ROWID;
    CREATE INDEX postings_chunk ON postings(chunk_id);
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        started REAL NOT NULL,
        finished REAL,
        status TEXT NOT NULL,           -- running | ok | partial | failed
        stats TEXT                      -- JSON summary
    );
    INSERT INTO meta VALUES ('data_version', '0');
    """,
    # 2: embeddings, keyed by the encoder's fingerprint and the chunk text's hash, so that only new
    # texts are embedded and a chunk that moves within or between files keeps its vector.
    """
    CREATE TABLE embeddings (
        model TEXT NOT NULL,            -- Encoder.key: hash of the embedding fingerprint
        hash TEXT NOT NULL,             -- chunks.hash
        vector BLOB NOT NULL,           -- float32, dims of the model
        PRIMARY KEY (model, hash)
    ) WITHOUT ROWID;
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)
