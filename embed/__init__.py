"""The embedding model: its tokenizer (shared with the chunker, kb.embed.tokenizer), its
configuration and what it computes (kb.embed.encoder.EmbedConfig, describe), the encoder on one
device (Encoder: transformers on the CPU, kb's packed path on a GPU, kb.embed.packed and
kb.embed.pipeline), one process per GPU (kb.embed.multi), and the GPU feed that embeds while
`kb index` reads (kb.embed.feed). torch loads only when an encoder does.
"""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=2)
def load_encoder(cfg):
    """One loaded model per kb.embed.encoder.EmbedConfig and process (loading torch and weights
    takes seconds): an Encoder, or with several `devices` a kb.embed.multi.MultiEncoder over one
    process each."""
    from dataclasses import replace

    from kb.embed.encoder import Encoder

    if cfg.backend:
        from kb.embed.remote import RemoteEncoder

        return RemoteEncoder(cfg)
    if len(cfg.devices) > 1:
        from kb.embed.multi import MultiEncoder

        return MultiEncoder(cfg, [f"cuda:{d}" for d in cfg.devices])
    if cfg.devices:
        return Encoder(replace(cfg, device=f"cuda:{cfg.devices[0]}", devices=()))
    return Encoder(cfg)


QUERY_ENCODERS = ("auto", "numpy", "torch")


def load_query_encoder(cfg, backend: str = "auto"):
    """The encoder a search embeds its queries with: kb.embed.light's numpy forward where it runs
    the model (no torch import: a cold `kb query` answers in well under a second), else
    load_encoder's. `backend` ("auto", "numpy", "torch"; KB_QUERY_ENCODER) forces one."""
    from kb.embed import light
    from kb.errors import UsageError

    if backend not in QUERY_ENCODERS:
        raise UsageError(f"KB_QUERY_ENCODER must be one of {', '.join(QUERY_ENCODERS)}, not {backend!r}")
    if cfg.backend:
        return load_encoder(cfg)
    runs = light.supported(cfg.folder())
    if backend == "numpy" and not runs:
        raise UsageError(f"the numpy query encoder does not run {cfg.folder().name} (BERT-family only)")
    if backend == "torch" or not runs:
        return load_encoder(cfg)
    return _light(cfg)


@lru_cache(maxsize=2)
def _light(cfg):
    from kb.embed.light import LightEncoder

    return LightEncoder(cfg)
