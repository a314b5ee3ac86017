import pytest

from conftest import SAMPLE
from kb.embed.tokenizer import load_tokenizer
from kb.index.chunker import ChunkConfig, chunk_text, headings

TOK = load_tokenizer()


def chunks(text, kind="markdown", **cfg):
    return chunk_text(text, kind, TOK, ChunkConfig(**cfg))


def test_token_ids_are_the_tokenisation_of_the_chunk_text():
    text = "# Title\n\n" + "\n".join(f"Line {i}: the quick brown fox jumps." for i in range(200))
    out = chunks(text)
    assert len(out) > 3
    for c in out:
        assert TOK.encode(c.text).ids == c.token_ids.tolist()
        assert len(c.token_ids) <= 240


def test_line_ranges_point_at_the_text():
    lines = [f"sentence {i} about topic {i % 7}" for i in range(300)]
    text = "\n".join(lines)
    for c in chunks(text, kind="text"):
        assert c.text == "\n".join(lines[c.start_line - 1:c.end_line])


def test_chunks_overlap_and_cover_everything():
    text = "\n".join(f"row {i} " + "word " * 10 for i in range(100))
    out = chunks(text, kind="text")
    for a, b in zip(out, out[1:]):
        assert b.start_line <= a.end_line  # overlap
        assert b.start_line > a.start_line  # progress
    assert out[0].start_line == 1 and out[-1].end_line == 100


def test_heading_paths_and_breaks():
    text = ("# Guide\nintro\n## Install\n" + "pip install things. " * 30 + "\n## Use\n" + "run it now. " * 20 + "\n"
            "```\n# not a heading\n```\n### Flags\n" + "use --flag. " * 40 + "\n")
    out = chunks(text)
    assert [c.heading for c in out][0] == "Guide"
    assert any(c.heading == "Guide > Use > Flags" for c in out)
    assert not any("not a heading" in c.heading for c in out)
    flags = next(c for c in out if c.heading.endswith("Flags"))
    assert flags.text.startswith("### Flags")  # a heading starts its chunk


def test_long_line_is_split_at_sentences():
    line = " ".join(f"Sentence number {i} ends here." for i in range(200))
    out = chunks(line, kind="text")
    assert len(out) >= 4
    assert all(c.start_line == c.end_line == 1 for c in out)
    assert all(c.text.rstrip().endswith(".") for c in out[:-1])


def test_rst_headings():
    text = "Title\n=====\n\nBody\n\nPart\n----\n\nMore\n"
    assert headings(text.split("\n"), "rst") == [(0, 1, "Title"), (5, 2, "Part")]
    assert chunks(text, kind="rst")[0].heading == "Title"


def test_empty_text_gives_no_chunks():
    assert chunks("\n\n   \n") == []


@pytest.mark.parametrize("cache_from", [0, 10**9])  # through the word cache, and without it
def test_ascii_fast_path_of_the_tokenizer_gives_the_normalizers_ids_and_offsets(cache_from, monkeypatch):
    """BERT's normalizer skipped on ASCII text (kb.embed.tokenizer): same ids and offsets as the
    full tokenizer, on text with tabs, line ends, upper case, punctuation and control characters."""
    import random

    from kb.embed import tokenizer

    monkeypatch.setattr(tokenizer, "WORD_CACHE_FROM", cache_from)
    monkeypatch.setattr(tokenizer, "FAST_FROM", 0)  # short texts too
    assert TOK._bare_spec is not None  # all-MiniLM-L6-v2 lower-cases: the fast path is taken
    rng = random.Random(11)
    alphabet = "abcXYZ 019_.,;:!?-'\"()[]{}#\t\r\n\n  The HTTP_Server parseURL \x01\x1b\x7f"
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 400))) for _ in range(300)]
    texts += [p.read_text() for p in sorted(SAMPLE.rglob("*.md"))]
    texts += ["x [CLS] y [SEP] z [PAD] [MASK] [UNK] [cls]", "a" * 150 + " b " + "zq" * 60, "", "  \n",
              "qwxzjv_blorptangle(frobnicate2x, ZZtop99) >>= ... ---"]
    assert sum(t.isascii() for t in texts) > 300
    for text in texts + texts[::-1]:  # again: the second time every word is in the word cache
        fast, full = TOK.encode(text), TOK._tok.encode(text, add_special_tokens=False)
        assert (fast.ids, fast.offsets) == (full.ids, full.offsets), repr(text[:80])


def test_word_cache_starting_afresh_keeps_the_tokenizers_ids(monkeypatch):
    """Past its size the word cache starts again from the vocabulary's words: the same output."""
    from kb.embed import tokenizer
    from kb.embed.tokenizer import Tokenizer, _WordCache, default_model_dir

    monkeypatch.setattr(tokenizer, "WORD_CACHE_FROM", 0)
    monkeypatch.setattr(tokenizer, "FAST_FROM", 0)
    tok = Tokenizer(default_model_dir(), "all-MiniLM-L6-v2")
    tok.encode("warm")
    monkeypatch.setattr(_WordCache, "MAX_WORDS", len(tok._words.index) + 50)
    texts = [p.read_text() for p in sorted(SAMPLE.rglob("*.md"))]
    assert sum(t.isascii() for t in texts) >= 15
    for text in texts:
        fast, full = tok.encode(text), tok._tok.encode(text, add_special_tokens=False)
        assert (fast.ids, fast.offsets) == (full.ids, full.offsets)
    assert len(tok._words.index) <= _WordCache.MAX_WORDS
