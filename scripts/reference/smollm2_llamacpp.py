#!/usr/bin/env python3
"""Reference values for SmolLM2-135M-Instruct (Q4_1 GGUF) from llama.cpp, via llama-cpp-python.

llama.cpp runs on the CPU with an f32 KV cache and without flash attention (lem's
settings). For each prompt (given as token ids, so tokenisation is not part of this
check; engine_smollm2.rs checks lem's tokenizer against transformers): the top-10
next-token logits after the prompt and 16 greedy tokens (argmax of llama.cpp's logits,
EOS not stopping it) with each step's lead of the chosen token over the runner-up.
Written as JSON to agent/tests/fixtures/smollm2_llamacpp.json, which
agent/tests/engine_smollm2_llamacpp.rs reads. Nothing from lem is used but the prompt ids,
which are llama.cpp's own tokenisation of the prompt texts.

    ~/.cache/lem-llama-venv/bin/python scripts/reference/smollm2_llamacpp.py [model.gguf] [out.json]
"""
import hashlib
import json
import os
import sys

import llama_cpp
import numpy as np

DEFAULT_MODEL = os.path.expanduser(
    "~/.cache/lem/models/HuggingFaceTB--SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf"
)
DEFAULT_OUT = os.path.join(
    os.path.dirname(os.path.abspath(__file__)),
    "..", "..", "agent", "tests", "fixtures", "smollm2_llamacpp.json",
)
GREEDY_TOKENS = 16
TOP_K = 10
SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def chat(user):
    """SmolLM2's chat template with its default system message, ready for the answer."""
    return (f"<|im_start|>system\n{SYSTEM}<|im_end|>\n"
            f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n")


PROMPTS = [
    {"name": "chat_capital", "text": chat("What is the capital of France?")},
    {"name": "chat_name_capital", "text": chat("Name the capital of France.")},
    {"name": "plain", "text": "The three primary colours are"},
]


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def last_logits(llm):
    ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
    return np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),)).astype(np.float64)


def main():
    model = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_MODEL
    out = sys.argv[2] if len(sys.argv) > 2 else DEFAULT_OUT
    llm = llama_cpp.Llama(
        model_path=model, n_ctx=512, n_batch=512, n_ubatch=512, n_threads=2,
        n_gpu_layers=0, type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32,
        flash_attn=False, verbose=False,
    )
    results = []
    for p in PROMPTS:
        ids = llm.tokenize(p["text"].encode("utf-8"), add_bos=False, special=True)
        llm.reset()
        llm.eval(ids)
        logits = last_logits(llm)
        top = np.argsort(-logits, kind="stable")[:TOP_K]
        greedy, margins, step = [], [], logits
        for _ in range(GREEDY_TOKENS):
            tok = int(np.argmax(step))
            greedy.append(tok)
            first, second = np.sort(step)[-2:][::-1]
            margins.append(round(float(first - second), 5))
            llm.eval([tok])
            step = last_logits(llm)
        results.append({
            "name": p["name"],
            "text": p["text"],
            "token_ids": [int(t) for t in ids],
            "top_logits": [[int(t), round(float(logits[t]), 5)] for t in top],
            "greedy": greedy,
            "greedy_margins": margins,
        })
        print(p["name"], len(ids), "tokens; top", results[-1]["top_logits"][:3],
              "greedy", greedy[:8], "margins", margins[:8], file=sys.stderr)
    doc = {
        "generator": "scripts/reference/smollm2_llamacpp.py",
        "llama_cpp_python": llama_cpp.__version__,
        "model_file": os.path.basename(model),
        "model_sha256": sha256(model),
        "greedy_tokens": GREEDY_TOKENS,
        "prompts": results,
    }
    with open(out, "w") as f:
        json.dump(doc, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print("wrote", os.path.normpath(out), file=sys.stderr)


if __name__ == "__main__":
    main()
