"""The decoder's linear layers on the CPU through oneDNN, their weights reordered once into its
blocked layout. torch's dense fp32 product (MKL) repacks the weight on each call: for the few
rows of a decode or speculative step that costs more than the product itself (2-core CPU,
Qwen2.5-0.5B's gate/up projection: 1 row 3.06 -> 1.24 ms, 5 rows 8.87 -> 3.05 ms; a 512-token
prefill chunk is as fast either way). The runner packs a model on the CPU in fp32 where torch
has oneDNN and its packed product agrees with `F.linear` on a probe; else nothing changes.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

LINEARS = ("qkv", "o_proj", "gate_up", "down_proj")  # a decoder layer's (kb.rag.decoder.Layer)


class PackedLinear(nn.Module):
    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), 1)
        self.bias = None if bias is None else bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")

    @property
    def weight(self) -> torch.Tensor:
        """The dense weight, made on each call: for the reference paths that read it (tests)."""
        return self.packed.to_dense()


def packable(dtype: torch.dtype) -> bool:
    """oneDNN is there and its packed product gives what `F.linear` gives (fp32 only: bf16 on a
    CPU without bf16 instructions would be slower, not faster)."""
    if dtype != torch.float32 or not torch.backends.mkldnn.is_available():
        return False
    g = torch.Generator().manual_seed(0)
    w, b, x = (torch.randn(*s, generator=g) for s in ((48, 32), (48,), (3, 32)))
    try:
        return torch.allclose(PackedLinear(w, b)(x), F.linear(x, w, b), rtol=1e-5, atol=1e-5)
    except (RuntimeError, AttributeError):  # a torch without these operators
        return False


def pack(model) -> None:
    """Swap a kb.rag.decoder.CausalLM's linear layers for packed ones, and give it a packed output
    embedding (`packed_head`): a copy where the input embedding is tied to it (the lookup needs
    the dense rows; 0.5B: 545 MB more, decoding 6.5 -> 7.9 tok/s on the 2-core CPU)."""
    for layer in model.layers:
        for name in LINEARS:
            linear = getattr(layer, name)
            setattr(layer, name, PackedLinear(linear.weight, linear.bias))
    model.packed_head = PackedLinear((model.lm_head or model.embed_tokens).weight, None)
    model.lm_head = None if model.lm_head is None else model.packed_head
