#!/usr/bin/env python3
"""Reference values for Gemma 3 270M (Q4_K_M GGUF) from llama.cpp, via llama-cpp-python.

llama.cpp runs on the CPU with an f32 KV cache and without flash attention (lem's
settings). For each prompt: llama.cpp's token ids (BOS added as the file says, special tokens such as
<start_of_turn> parsed), the top-10 next-token logits after the prompt, and 16 greedy
tokens (argmax of llama.cpp's logits, EOS not stopping it) with each step's lead of the
chosen token over the runner-up. Written as JSON to
agent/tests/fixtures/gemma3_llamacpp.json, which agent/tests/engine_gemma3.rs reads.
Nothing from lem is used.

    python3 -m venv ~/.cache/lem-llama-venv
    ~/.cache/lem-llama-venv/bin/pip install 'llama-cpp-python[server]'
    scripts/fetch-gemma3.sh
    ~/.cache/lem-llama-venv/bin/python scripts/reference/gemma3_llamacpp.py [model.gguf] [out.json]
"""
import hashlib
import json
import os
import sys

import llama_cpp
import numpy as np

DEFAULT_MODEL = os.path.expanduser(
    "~/.cache/lem/models/google--gemma-3-270m-GGUF/gemma-3-270m-q4_k_m.gguf"
)
DEFAULT_OUT = os.path.join(
    os.path.dirname(os.path.abspath(__file__)),
    "..", "..", "agent", "tests", "fixtures", "gemma3_llamacpp.json",
)
GREEDY_TOKENS = 16
TOP_K = 10


def gemma_turn(user):
    """Gemma's chat format for one user turn, ending where the model's answer starts."""
    return f"<start_of_turn>user\n{user}<end_of_turn>\n<start_of_turn>model\n"


# Over 512 tokens: the sliding-window layers then see only part of the context.
LONG = " ".join(f"Sentence {i} says that {i} times 7 is {i * 7}." for i in range(1, 41))

PROMPTS = [
    {"name": "plain", "text": "The capital of France is"},
    {"name": "chat", "text": gemma_turn("What is the capital of France?"), "chat_user": "What is the capital of France?"},
    {"name": "digits", "text": "Compute 1234 + 5678 = "},
    {"name": "whitespace_unicode", "text": "Ünïcödé  text\n\n\twith   spaces, émojis 🙂 and 日本語 ✓"},
    {"name": "long_window", "text": LONG + " Sentence 41 says that 41 times 7 is"},
]


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def last_logits(llm):
    """The logits llama.cpp computed for the last token evaluated (float32, as f64)."""
    n_vocab = llm.n_vocab()
    ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
    return np.ctypeslib.as_array(ptr, shape=(n_vocab,)).astype(np.float64)


def eog_ids(llm):
    """Every token llama.cpp ends generation at (EOS, end-of-turn) for this file."""
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    n = llama_cpp.llama_vocab_n_tokens(vocab)
    return [t for t in range(n) if llama_cpp.llama_vocab_is_eog(vocab, t)]


def main():
    model = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_MODEL
    out = sys.argv[2] if len(sys.argv) > 2 else DEFAULT_OUT
    llm = llama_cpp.Llama(
        model_path=model,
        n_ctx=2048,
        n_batch=2048,
        n_ubatch=2048,
        n_threads=2,
        n_gpu_layers=0,
        # f32 K/V and no flash attention, as lem computes: llama.cpp's default f16 cache
        # alone moves this model's logits by up to ~0.25.
        type_k=llama_cpp.GGML_TYPE_F32,
        type_v=llama_cpp.GGML_TYPE_F32,
        flash_attn=False,
        verbose=False,
    )
    results = []
    for p in PROMPTS:
        ids = llm.tokenize(p["text"].encode("utf-8"), add_bos=True, special=True)
        llm.reset()
        llm.eval(ids)
        logits = last_logits(llm)
        top = np.argsort(-logits, kind="stable")[:TOP_K]
        greedy = []
        margins = []
        step = logits
        for _ in range(GREEDY_TOKENS):
            tok = int(np.argmax(step))
            greedy.append(tok)
            # How far the chosen token leads the runner-up: a near-tie may go either way
            # in another engine's rounding.
            first, second = np.sort(step)[-2:][::-1]
            margins.append(round(float(first - second), 5))
            llm.eval([tok])
            step = last_logits(llm)
        entry = {
            "name": p["name"],
            "text": p["text"],
            "token_ids": [int(t) for t in ids],
            "top_logits": [[int(t), round(float(logits[t]), 5)] for t in top],
            "greedy": greedy,
            "greedy_margins": margins,
        }
        if "chat_user" in p:
            entry["chat_user"] = p["chat_user"]
        results.append(entry)
        print(p["name"], len(ids), "tokens; top", entry["top_logits"][:3], "greedy", greedy[:6], file=sys.stderr)
    doc = {
        "generator": "scripts/reference/gemma3_llamacpp.py",
        "llama_cpp_python": llama_cpp.__version__,
        "model_file": os.path.basename(model),
        "model_sha256": sha256(model),
        "eog_token_ids": eog_ids(llm),
        "greedy_tokens": GREEDY_TOKENS,
        "prompts": results,
    }
    with open(out, "w") as f:
        json.dump(doc, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print("wrote", os.path.normpath(out), file=sys.stderr)


if __name__ == "__main__":
    main()
