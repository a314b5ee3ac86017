"""KV blocks on disk, so that a process started afresh (a CLI run) still hits the prefix cache.

One file per full block, named by the hash chain of every token up to the block's end, under a
folder named by the model's fingerprint (weights, dtype, block size): a block is only ever read
back by the model that wrote it, for exactly the prefix it was computed from. Files are written
atomically; reads refresh their mtime, and `trim` removes the least recently used beyond a cap.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from kb.common import BROKEN_FILE, private_dir
from kb.index.store.kv import block_path


class DiskCache:
    def __init__(self, folder: Path, fingerprint: str, max_bytes: int = 2 * 2**30):
        self.folder = Path(folder) / fingerprint
        self.max_bytes = max_bytes
        self.written = self.loaded = 0
        self._bytes: int | None = None  # the folder's size as of the last scan, plus what this process wrote

    def _path(self, digest: bytes) -> Path:
        return block_path(self.folder, digest.hex())

    def save(self, digest: bytes, tokens: tuple[int, ...], k: torch.Tensor, v: torch.Tensor) -> None:
        path = self._path(digest)
        if path.exists():
            return
        private_dir(path.parent)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        # bf16 has no numpy type: keep the raw 16 bits and the dtype's name.
        dtype = str(k.dtype).removeprefix("torch.")
        as_np = (lambda t: t.view(torch.int16).numpy()) if k.dtype == torch.bfloat16 else (lambda t: t.numpy())
        with os.fdopen(os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600), "wb") as f:
            np.savez(f, tokens=np.asarray(tokens, dtype=np.int64), k=as_np(k), v=as_np(v), dtype=np.array(dtype))
        os.replace(tmp, path)
        self.written += 1
        if self._bytes is not None:
            self._bytes += path.stat().st_size

    def load(self, digest: bytes, tokens: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor] | None:
        path = self._path(digest)
        try:
            with np.load(path, allow_pickle=False) as f:
                if tuple(f["tokens"].tolist()) != tokens:
                    return None  # a hash collision or a foreign file: never used
                dtype = getattr(torch, str(f["dtype"]))
                k, v = torch.from_numpy(f["k"]), torch.from_numpy(f["v"])
            if dtype == torch.bfloat16:
                k, v = k.view(torch.bfloat16), v.view(torch.bfloat16)
            os.utime(path)
        except (*BROKEN_FILE, AttributeError):
            return None  # missing, torn or damaged: computed again
        self.loaded += 1
        return k, v

    def trim(self) -> int:
        """Delete least recently used files beyond `max_bytes`; returns how many. The folder is
        scanned on a process's first call and then only when what it wrote may pass the cap (a
        scan stats every file: thousands for a reranker's passages)."""
        if self._bytes is not None and self._bytes <= self.max_bytes:
            return 0
        files = [(p.stat().st_mtime, p.stat().st_size, p) for p in self.folder.glob("*/*.npz")]
        total = sum(size for _, size, _ in files)
        self._bytes = total
        removed = 0
        for _, size, path in sorted(files):
            if total <= self.max_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size
            removed += 1
        self._bytes = total
        return removed


def fingerprint(folder: Path, dtype: torch.dtype, block_size: int) -> str:
    """Which KV a disk block holds: the weights' bytes (sizes and names), dtype and block size."""
    h = hashlib.sha256(f"{dtype}|{block_size}".encode())
    for f in sorted(folder.glob("*.safetensors")) + [folder / "config.json"]:
        st = f.stat()
        h.update(f"{f.name}|{st.st_size}".encode())
        with open(f, "rb") as fh:  # the header of a safetensors file names every tensor's shape
            h.update(fh.read(1 << 20))
    return h.hexdigest()[:16]
