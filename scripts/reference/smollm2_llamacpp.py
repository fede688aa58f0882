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
import os
import sys

from common import MODELS, fixture_path, load, model_fixture, prompt_reference, write_fixture

DEFAULT_MODEL = os.path.join(
    MODELS, "HuggingFaceTB--SmolLM2-135M-Instruct", "SmolLM2-135M-Instruct.Q4_1.gguf"
)
DEFAULT_OUT = fixture_path("smollm2_llamacpp.json")
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


def main():
    model = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_MODEL
    out = sys.argv[2] if len(sys.argv) > 2 else DEFAULT_OUT
    llm = load(model, 512)
    results = []
    for p in PROMPTS:
        entry = prompt_reference(llm, p["name"], p["text"], False, GREEDY_TOKENS, TOP_K)
        results.append(entry)
        print(p["name"], len(entry["token_ids"]), "tokens; top", entry["top_logits"][:3],
              "greedy", entry["greedy"][:8], "margins", entry["greedy_margins"][:8],
              file=sys.stderr)
    doc = model_fixture("smollm2_llamacpp.py", model, GREEDY_TOKENS, results)
    write_fixture(doc, out, indent=1)


if __name__ == "__main__":
    main()
