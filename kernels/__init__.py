"""kb's own Triton kernels, each beside the plain-torch reference it is checked against on random
inputs (tests/test_kernels.py, tests/test_packed_encoder.py):

- `encoder_layers`: the packed sentence encoder's layers (kb.embed.packed);
- `paged_attention`, `paged_decode`: the generator's attention over its paged KV cache (store,
  prefill/extend, decode with shared prefixes), both checked against `paged_attention_ref`;
- `fused`: the generator's fused layer pieces (RMSNorm, rotary + KV store, SwiGLU).

Kernels take plain tensors and import nothing from kb above them; only the `_ref` modules load
without triton, so the CPU path (and `kb --help`) never imports it.
"""
