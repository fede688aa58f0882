#!/usr/bin/env python3
"""Reference next-token logits for SmolLM2-135M-Instruct (Q4_1 GGUF) with f32 weights.

An independent Llama forward pass in numpy (float64) over tensors dequantised by
llama.cpp's own `gguf` package; nothing from lem. agent/tests/engine_reference.rs compares
lem's f32-weight logits with what this prints.

    python3 -m pip install numpy gguf
    python3 scripts/reference/smollm2_logits.py [path/to/SmolLM2-135M-Instruct.Q4_1.gguf]

GGUF stores q/k rows permuted for llama.cpp's rotary layout, so the rotation here is the
interleaved one (pairs 2i, 2i+1); the neox (half-split) rotation ranks <|im_end|> first.
"""
import os
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize

DEFAULT = os.path.expanduser(
    "~/.cache/lem/models/HuggingFaceTB--SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf"
)
# The ChatML prompt of "What is the capital of France?" with SmolLM2's default system
# message (the ids transformers gives; scripts/reference/smollm2_tokens.py).
PROMPT = [
    1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018,
    411, 407, 19712, 8182, 2, 198, 1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47,
    2, 198, 1, 520, 9531, 198,
]


def field(reader, key):
    f = reader.fields[key]
    return f.parts[f.data[0]][0]


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else DEFAULT
    r = GGUFReader(path)
    n_head = int(field(r, "llama.attention.head_count"))
    n_kv = int(field(r, "llama.attention.head_count_kv"))
    n_layer = int(field(r, "llama.block_count"))
    eps = float(field(r, "llama.attention.layer_norm_rms_epsilon"))
    theta = float(field(r, "llama.rope.freq_base"))
    w = {t.name: dequantize(t.data, t.tensor_type).astype(np.float64) for t in r.tensors}

    emb = w["token_embd.weight"]  # (vocab, hidden)
    hidden = emb.shape[1]
    head_dim = hidden // n_head
    n = len(PROMPT)

    def rms(x, g):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * g

    inv_freq = theta ** (-np.arange(0, head_dim, 2) / head_dim)
    ang = np.outer(np.arange(n), inv_freq)  # (n, head_dim/2)
    cos, sin = np.cos(ang), np.sin(ang)

    def rope(x):  # x: (heads, n, head_dim), interleaved pairs
        a, b = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = a * cos - b * sin
        out[..., 1::2] = a * sin + b * cos
        return out

    mask = np.triu(np.full((n, n), -np.inf), 1)
    x = emb[PROMPT]
    for i in range(n_layer):
        p = f"blk.{i}."
        h = rms(x, w[p + "attn_norm.weight"])
        q = (h @ w[p + "attn_q.weight"].T).reshape(n, n_head, head_dim).transpose(1, 0, 2)
        k = (h @ w[p + "attn_k.weight"].T).reshape(n, n_kv, head_dim).transpose(1, 0, 2)
        v = (h @ w[p + "attn_v.weight"].T).reshape(n, n_kv, head_dim).transpose(1, 0, 2)
        q, k = rope(q), rope(k)
        rep = n_head // n_kv
        k, v = np.repeat(k, rep, axis=0), np.repeat(v, rep, axis=0)
        s = q @ k.transpose(0, 2, 1) / np.sqrt(head_dim) + mask
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        o = (s @ v).transpose(1, 0, 2).reshape(n, hidden)
        x = x + o @ w[p + "attn_output.weight"].T
        h = rms(x, w[p + "ffn_norm.weight"])
        g = h @ w[p + "ffn_gate.weight"].T
        u = h @ w[p + "ffn_up.weight"].T
        x = x + ((g / (1 + np.exp(-g))) * u) @ w[p + "ffn_down.weight"].T
    last = rms(x[-1], w["output_norm.weight"])
    out_w = w.get("output.weight", emb)  # tied embeddings
    logits = out_w @ last
    top = np.argsort(-logits)[:5]
    print("top5:", ", ".join(f"({int(t)}, {logits[t]:.6f})" for t in top))
    print("first8:", ", ".join(f"{v:.6f}" for v in logits[:8]))


if __name__ == "__main__":
    main()
