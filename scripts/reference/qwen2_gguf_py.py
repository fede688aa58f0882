#!/usr/bin/env python3
"""Writes a Qwen2 GGUF the way llama.cpp's own converter does, with llama.cpp's gguf-py.

lem must load GGUFs that llama.cpp's tools write, not only its own converter's. This
script is independent of lem: it reads a Hugging Face Qwen2 checkpoint (config.json,
tokenizer.json, tokenizer_config.json, an F32 model.safetensors) and writes it as
convert_hf_to_gguf.py's `Qwen2Model` does (without PyTorch): `qwen2.*` hyper-parameters
through GGUFWriter's own adders, the byte-level BPE vocabulary as `_set_vocab_gpt2` builds
it (control tokens for special added tokens, user-defined for the rest, `[PAD{i}]` for
ids the tokenizer lacks, `tokenizer.ggml.pre = qwen2`, which is what llama.cpp's
pre-tokenizer hash table maps Qwen2's regex to), merges and special ids through
gguf.SpecialVocab, tensor names through gguf's TensorNameMap, Q/K rows as stored (Qwen2 is
not permuted), every tensor F32.

    python scripts/reference/qwen2_gguf_py.py SRC_DIR OUT.gguf

Needs numpy and gguf (`pip install gguf`; scripts/setup-gguf-py.sh makes a venv).
agent/tests/engine_tiny_llamacpp.rs runs it on its tiny Qwen2 checkpoint and checks that
lem gives llama.cpp's logits on the result.
"""
import json
import os
import struct
import sys

import gguf
import numpy as np


def read_safetensors(path):
    """name -> float32 array, for an all-F32 safetensors file."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            sys.exit(f"{path}: {name} is {info['dtype']}; this script reads F32 only")
        a, b = info["data_offsets"]
        out[name] = np.frombuffer(data[a:b], dtype="<f4").reshape(info["shape"])
    return out


def vocab(writer, src, cfg):
    """convert_hf_to_gguf.py's `_set_vocab_gpt2` / `get_vocab_base`, without transformers."""
    with open(os.path.join(src, "tokenizer.json")) as f:
        tok = json.load(f)
    reverse = {i: t for t, i in tok["model"]["vocab"].items()}
    added = {a["id"]: a for a in tok.get("added_tokens", [])}
    tokens, types = [], []
    for i in range(cfg["vocab_size"]):
        if i not in reverse and i not in added:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(added[i]["content"])
            types.append(
                gguf.TokenType.CONTROL if added[i]["special"] else gguf.TokenType.USER_DEFINED
            )
        else:
            tokens.append(reverse[i])
            types.append(gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(src, load_merges=True)
    special.add_to_gguf(writer)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, out = sys.argv[1], sys.argv[2]
    with open(os.path.join(src, "config.json")) as f:
        cfg = json.load(f)
    if cfg["architectures"][0] != "Qwen2ForCausalLM":
        sys.exit(f"{src}: not a Qwen2ForCausalLM checkpoint")
    arch = gguf.MODEL_ARCH.QWEN2
    writer = gguf.GGUFWriter(out, gguf.MODEL_ARCH_NAMES[arch])
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(os.path.basename(os.path.normpath(src)))
    writer.add_block_count(cfg["num_hidden_layers"])
    writer.add_context_length(cfg["max_position_embeddings"])
    writer.add_embedding_length(cfg["hidden_size"])
    writer.add_feed_forward_length(cfg["intermediate_size"])
    writer.add_head_count(cfg["num_attention_heads"])
    writer.add_head_count_kv(cfg["num_key_value_heads"])
    writer.add_rope_freq_base(cfg["rope_theta"])
    writer.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    vocab(writer, src, cfg)

    names = gguf.get_tensor_name_map(arch, cfg["num_hidden_layers"])
    for name, data in read_safetensors(os.path.join(src, "model.safetensors")).items():
        if cfg.get("tie_word_embeddings") and name == "lm_head.weight":
            continue
        new = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if new is None:
            sys.exit(f"{src}: cannot map tensor {name}")
        writer.add_tensor(new, np.ascontiguousarray(data, dtype=np.float32))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    print("wrote", out, file=sys.stderr)


if __name__ == "__main__":
    main()
