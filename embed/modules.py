"""What a sentence-transformers folder adds around its transformer, read from its files: the
prompts it was trained with for queries and documents (and how a prompt joins the text's first
word when the two are tokenised together), and the Dense layers after pooling (EmbeddingGemma
projects 768 -> 3072 -> 768 so). No torch until the layers are loaded.
"""

from __future__ import annotations

import json
from pathlib import Path


def prompts(folder: Path) -> tuple[str, str]:
    """(query prompt, document prompt) of config_sentence_transformers.json, else empty."""
    try:
        found = json.loads((folder / "config_sentence_transformers.json").read_text()).get("prompts") or {}
    except (OSError, ValueError):
        return "", ""
    return found.get("query", ""), found.get("document", found.get("passage", ""))


def dense(folder: Path) -> list[tuple[str, int, int, bool]]:
    """(folder, in, out, bias) of each Dense module in modules.json order. Their activation must be
    the identity (those of EmbeddingGemma are); another is refused rather than silently dropped."""
    from kb.errors import UsageError

    try:
        modules = json.loads((folder / "modules.json").read_text())
    except (OSError, ValueError):
        return []
    out = []
    for m in modules:
        if not m.get("type", "").endswith(".Dense"):
            continue
        cfg = json.loads((folder / m["path"] / "config.json").read_text())
        if not cfg.get("activation_function", "").endswith("Identity"):
            raise UsageError(f"{folder}: Dense module {m['path']} has activation {cfg.get('activation_function')}; "
                             "kb runs only identity Dense layers")
        out.append((m["path"], cfg["in_features"], cfg["out_features"], bool(cfg.get("bias", True))))
    return out


def load_dense(folder: Path, device, dtype):
    """The Dense layers as one torch function of pooled vectors (identity without any)."""
    import torch
    from safetensors.torch import load_file

    layers = []
    for path, _, _, bias in dense(folder):
        weights = load_file(str(folder / path / "model.safetensors"))
        w = weights["linear.weight"].to(device, dtype)
        b = weights["linear.bias"].to(device, dtype) if bias else None
        layers.append((w, b))

    def apply(x):
        for w, b in layers:
            x = torch.nn.functional.linear(x.to(w.dtype), w, b)
        return x
    return apply


def prompt_joins(tokenizer, prompt: str) -> bool:
    """Whether `prompt` tokenised with a text differs from the two tokenised apart."""
    return tokenizer.encode(prompt + "Word").ids != tokenizer.encode(prompt).ids + tokenizer.encode("Word").ids


def first_word(tokenizer, ids) -> tuple[int, str]:
    """(k, text): the most leading tokens (8 at most, 1 at least) that spell text without whitespace."""
    best = (1, tokenizer.decode(ids[:1]))
    for k in range(2, min(len(ids), 8) + 1):
        text = tokenizer.decode(ids[:k])
        if any(c.isspace() for c in text):
            break
        best = (k, text)
    return best
