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
import os
import sys

import llama_cpp

from common import MODELS, fixture_path, load, model_fixture, prompt_reference, write_fixture

DEFAULT_MODEL = os.path.join(MODELS, "google--gemma-3-270m-GGUF", "gemma-3-270m-q4_k_m.gguf")
DEFAULT_OUT = fixture_path("gemma3_llamacpp.json")
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


def eog_ids(llm):
    """Every token llama.cpp ends generation at (EOS, end-of-turn) for this file."""
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    n = llama_cpp.llama_vocab_n_tokens(vocab)
    return [t for t in range(n) if llama_cpp.llama_vocab_is_eog(vocab, t)]


def main():
    model = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_MODEL
    out = sys.argv[2] if len(sys.argv) > 2 else DEFAULT_OUT
    llm = load(model, 2048)
    results = []
    for p in PROMPTS:
        entry = prompt_reference(llm, p["name"], p["text"], True, GREEDY_TOKENS, TOP_K)
        if "chat_user" in p:
            entry["chat_user"] = p["chat_user"]
        results.append(entry)
        print(p["name"], len(entry["token_ids"]), "tokens; top", entry["top_logits"][:3],
              "greedy", entry["greedy"][:6], file=sys.stderr)
    doc = model_fixture("gemma3_llamacpp.py", model, GREEDY_TOKENS, results, eog_token_ids=eog_ids(llm))
    write_fixture(doc, out, indent=1)


if __name__ == "__main__":
    main()
