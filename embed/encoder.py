"""The embedding encoder: any local Hugging Face encoder folder (BERT, MPNet, XLM-R families).
It eats the token ids the chunker stored (adding only the model's special tokens and the passage
prefix), batched by a token budget.

- GPU: kb's packed encoder (kb.embed.packed, Triton kernels): sequences back to back, no padding,
  fp16, batches of `gpu_batch_tokens`; the next batch is packed and copied while the GPU runs the
  last, and its vectors come back asynchronously. Families it does not run fall back to the next.
- CPU (and other models): transformers with PyTorch SDPA over length-sorted batches, so that
  padding stays small; fp32 on all cores.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from kb.embed import modules
from kb.embed.framing import Framing
from kb.embed.tokenizer import DEFAULT_MODEL, default_model_dir
from kb.common import quiet_transformers
from kb.errors import NotFound, UsageError

POOLINGS = ("auto", "mean", "cls")
RUNTIME = ("device", "devices", "feed_tokens", "feed_depth", "feed_graphs")


@dataclass(frozen=True)
class EmbedConfig:
    model: str | None = None  # a local model folder; None = all-MiniLM-L6-v2 from its package
    pooling: str = "auto"  # auto reads sentence-transformers' 1_Pooling/config.json, else mean
    normalize: bool = True
    query_prefix: str = ""  # e.g. "query: " for E5; "": the folder's own query prompt (sentence-transformers)
    passage_prefix: str = ""  # e.g. "passage: " for E5; "": the folder's own document prompt
    dims: int = 0  # Matryoshka: keep the first `dims` of each vector (then normalise); 0: all
    batch_tokens: int = 4096  # padded tokens per forward pass (measured best on a 2-core CPU)
    gpu_batch_tokens: int = 262144  # tokens per packed GPU batch (bench/embed_gpu.py: best of 16K-256K)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    devices: tuple[int, ...] = ()  # several GPUs: one encoder process per GPU (kb.embed.multi)
    # The GPU feed (kb.embed.feed), embedding while `kb index` still reads. Its batches are
    # gpu_batch_tokens capped at feed_tokens: smaller batches start the GPU early and leave less to
    # embed when reading ends; end to end on an H200 64K and 256K were as fast as each other, 32K
    # slower for bge-base (bench/embed_gpu.py --feed-variants).
    feed_tokens: int = 65536
    # Batches in flight on the GPU: 4 and 8 were no faster than 2 for MiniLM, and slower for
    # bge-base (3.28 s at 2, 3.64 s at 4, 3.89 s at 8).
    feed_depth: int = 2
    feed_graphs: bool = True  # full batches run as CUDA graphs (kb.embed.pipeline.PackedStream)
    # an OpenAI-compatible embeddings server instead of a local model (kb.embed.remote), its model name
    backend: str | None = None
    backend_model: str | None = None

    def __post_init__(self):
        if self.pooling not in POOLINGS:
            raise UsageError(f"--pooling must be one of {', '.join(POOLINGS)}")
        if self.batch_tokens < 256 or self.gpu_batch_tokens < 1024:
            raise UsageError("batch_tokens must be at least 256 (gpu_batch_tokens 1024)")
        if self.feed_tokens < 1024 or self.feed_depth < 1:
            raise UsageError("feed_tokens must be at least 1024 and feed_depth at least 1")
        if self.dims < 0:
            raise UsageError("--dims must be 0 (all) or a positive number")

    def stored(self) -> dict:
        """The settings a store keeps with its vectors (meta `embedding`, read back by search);
        where this process runs them (devices) and the GPU feed's knobs are left out."""
        return {k: v for k, v in asdict(self).items() if k not in RUNTIME}

    @property
    def feed_batch_tokens(self) -> int:
        """Tokens per batch of the GPU feed."""
        return min(self.gpu_batch_tokens, self.feed_tokens)

    def folder(self) -> Path:
        if self.model is None:
            return default_model_dir()
        folder = Path(self.model).expanduser()
        if not (folder / "config.json").is_file():
            raise NotFound(f"not a Hugging Face model folder (no config.json): {self.model}")
        return folder


def _pooling(folder: Path, asked: str) -> str:
    if asked != "auto":
        return asked
    try:
        cfg = json.loads((folder / "1_Pooling" / "config.json").read_text())
    except (OSError, ValueError):
        return "mean"
    return "cls" if cfg.get("pooling_mode_cls_token") else "mean"


def _max_tokens(folder: Path, config: dict) -> int:
    """The model's trained length: sentence-transformers' max_seq_length, else its positions."""
    limit = config.get("max_position_embeddings", 512)
    if config.get("model_type", "") in ("xlm-roberta", "roberta", "mpnet", "camembert"):
        limit -= 2  # these offset position ids by the padding index
    try:
        limit = min(limit, json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"])
    except (OSError, ValueError, KeyError):
        pass
    return limit


@dataclass(frozen=True)
class EmbedSpec:
    """What an encoder computes, known from its files without loading torch: the store keeps
    vectors under `key`, and a store/query mismatch of `fingerprint` is an error."""

    fingerprint: dict
    key: str
    dims: int

    @classmethod
    def of(cls, fingerprint: dict) -> "EmbedSpec":
        """The spec of a fingerprint: its key is a hash of it."""
        key = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:16]
        return cls(fingerprint, key, fingerprint["dims"])


def describe(cfg: EmbedConfig) -> EmbedSpec:
    from kb.embed.tokenizer import load_tokenizer

    if cfg.backend:
        from kb.embed import remote

        return remote.describe(cfg)
    folder = cfg.folder()
    raw = (folder / "config.json").read_bytes()
    config = json.loads(raw)
    query, document = modules.prompts(folder)
    dense = modules.dense(folder)
    width = dense[-1][2] if dense else config["hidden_size"]
    if cfg.dims > width:
        raise UsageError(f"--dims {cfg.dims} is more than the model's {width}")
    fingerprint = {
        "model": DEFAULT_MODEL if cfg.model is None else folder.name,
        "model_sha256": hashlib.sha256(raw + load_tokenizer(cfg.model).sha256.encode()).hexdigest()[:16],
        "dims": cfg.dims or width, "pooling": _pooling(folder, cfg.pooling),
        "normalize": cfg.normalize, "query_prefix": cfg.query_prefix or query,
        "passage_prefix": cfg.passage_prefix or document, "max_tokens": _max_tokens(folder, config),
    }
    if dense:  # (kept out of older stores' fingerprints, which had none)
        fingerprint["dense"] = [d[0] for d in dense]
    return EmbedSpec.of(fingerprint)


class Encoder(Framing):
    def __init__(self, cfg: EmbedConfig):
        quiet_transformers()
        import torch
        from transformers import AutoModel

        folder = cfg.folder()
        self._frame(cfg, describe(cfg))
        self.device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available()
                                   else ("cpu" if cfg.device == "auto" else cfg.device))
        self.dtype = _dtype(folder, self.device)
        if self.device.type == "cpu":
            torch.set_num_threads(os.cpu_count() or 1)
        self.model = AutoModel.from_pretrained(folder, local_files_only=True, dtype=self.dtype,
                                               attn_implementation="sdpa").to(self.device).eval()
        self.pad_id = self.model.config.pad_token_id or 0
        self.dense = modules.load_dense(folder, self.device, self.dtype) if "dense" in self.fingerprint else None
        self.packed = self.gemma = None
        if self.device.type == "cuda":
            self._gpu_runners()

    def _gpu_runners(self) -> None:
        """kb's packed runners where they run this model: BERT-family (kb.embed.packed), Gemma 3 (kb.embed.gemma)."""
        from kb.embed import gemma
        from kb.embed.packed import PackedEncoder, supported

        if gemma.supported(self.model.config) and self.pooling == "mean":
            self.gemma = gemma.PackedGemma(self.model)
        if supported(self.model.config) and self.dense is None and not self.cfg.dims:
            self.packed = PackedEncoder(self.model, gemm="lt")  # measured fastest, cosine 0.99999

    def _embed(self, id_lists, prefix: list[int]) -> np.ndarray:
        if self.packed is None:
            return super()._embed(id_lists, prefix)
        from kb.embed.pipeline import embed_packed

        return embed_packed(self._stream(prefix), id_lists, self.cfg.gpu_batch_tokens)

    def passage_stream(self, graph_tokens: int | None = None, depth: int = 2):
        """A kb.embed.pipeline.PackedStream of passages (chunk token ids), on the GPU only; with
        `graph_tokens`, full batches of that many tokens run as CUDA graphs."""
        return self._stream(self._passage, graph_tokens, depth) if self.packed is not None else None

    def _stream(self, prefix: list[int], graph_tokens: int | None = None, depth: int = 2):
        from kb.embed.pipeline import PackedStream

        head, room = self._framing(prefix)
        return PackedStream(self.packed, head, self.tail, room, self.device, self.pooling, self.cfg.normalize,
                            depth=depth, graph_tokens=graph_tokens)

    def embed_inputs(self, inputs: list[np.ndarray]) -> np.ndarray:
        """Vectors of model inputs (special tokens included): Gemma packed on a GPU (kb.embed.gemma)
        where they fit its window, the rest through transformers, length-sorted."""
        out = np.zeros((len(inputs), self.dims), dtype=np.float32)
        rest = list(range(len(inputs)))
        if self.gemma is not None:
            fits = [self.gemma.fits([x]) for x in inputs]
            short = [i for i in rest if fits[i]]
            if short:
                pooled = self.gemma.pool([inputs[i] for i in short], self.cfg.gpu_batch_tokens)
                out[short] = self._finish(pooled).cpu().numpy()
            rest = [i for i in rest if not fits[i]]
        order = sorted(rest, key=lambda i: len(inputs[i]))
        start = 0
        while start < len(order):
            # The longest input of a length-sorted batch is its last: grow while the padded size fits.
            end = start + 1
            while end < len(order) and len(inputs[order[end]]) * (end + 1 - start) <= self.cfg.batch_tokens:
                end += 1
            batch = order[start:end]
            out[batch] = self.forward_batch([inputs[i] for i in batch])
            start = end
        return out

    def forward_batch(self, batch: list[list[int]]) -> np.ndarray:
        import torch

        width = max(len(x) for x in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, x in enumerate(batch):
            ids[i, :len(x)] = torch.from_numpy(x)
            mask[i, :len(x)] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        with torch.inference_mode():
            hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state.float()  # (b, t, d)
            if self.pooling == "cls":
                pooled = hidden[:, 0]
            else:
                m = mask.unsqueeze(-1).float()
                pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1)
            return self._finish(pooled).cpu().numpy()

    def _finish(self, pooled):
        """Pooled vectors (n, hidden) float32 -> the Dense layers, Matryoshka's cut, normalised."""
        import torch

        with torch.inference_mode():
            if self.dense is not None:
                pooled = self.dense(pooled.to(self.dtype)).float()
            pooled = pooled[:, :self.dims]  # Matryoshka: the first dims carry the most
            if self.cfg.normalize:
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return pooled


def _dtype(folder: Path, device):
    """fp32 on the CPU. On a GPU fp16 rather than bf16: three more bits of mantissa, and BERT-family
    activations stay far inside its range (bench/embed_gpu.py checks the cosine to fp32 on every
    chunk); but Gemma's overflow fp16: bf16 there."""
    import torch

    if device.type != "cuda":
        return torch.float32
    gemma = json.loads((folder / "config.json").read_text()).get("model_type", "").startswith("gemma")
    return torch.bfloat16 if gemma else torch.float16
