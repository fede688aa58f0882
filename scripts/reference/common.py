"""What the llama.cpp reference scripts share (imported by *_llamacpp.py).

llama.cpp runs through llama-cpp-python on the CPU with an f32 KV cache and without flash
attention, as lem computes (llama.cpp's default f16 cache alone moves Gemma 3's logits by
up to ~0.25), quietly, on two threads. Nothing from lem is used here.
"""
import hashlib
import json
import os
import sys

import llama_cpp
import numpy as np

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
MODELS = os.path.expanduser("~/.cache/lem/models")


def fixture_path(name):
    """agent/tests/fixtures/NAME, where the engine tests read the references."""
    return os.path.join(ROOT, "agent", "tests", "fixtures", name)


def sha256(path):
    """Hex SHA-256 of a file, read in 1 MiB pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def load(model_path, n_ctx, **extra):
    """A llama.cpp context over `model_path` with lem's settings; `n_ctx` is also the
    batch, so a prompt is evaluated in one batch."""
    return llama_cpp.Llama(
        model_path=model_path,
        n_ctx=n_ctx,
        n_batch=n_ctx,
        n_ubatch=n_ctx,
        n_threads=2,
        n_gpu_layers=0,
        type_k=llama_cpp.GGML_TYPE_F32,
        type_v=llama_cpp.GGML_TYPE_F32,
        flash_attn=False,
        verbose=False,
        **extra,
    )


def last_logits(llm):
    """The logits llama.cpp computed for the last token evaluated (float32, as f64)."""
    ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
    return np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),)).astype(np.float64)


def run_prompt(llm, ids, greedy_tokens, margin_digits):
    """Evaluates `ids` from an empty cache, then `greedy_tokens` greedy steps (argmax of
    llama.cpp's logits, EOS not stopping it). Returns the logits after the prompt, the
    greedy tokens and each step's lead of the chosen token over the runner-up, rounded to
    `margin_digits` (a near-tie may go either way in another engine's rounding)."""
    llm.reset()
    llm.eval(ids)
    logits = last_logits(llm)
    greedy, margins, step = [], [], logits
    for _ in range(greedy_tokens):
        tok = int(np.argmax(step))
        greedy.append(tok)
        first, second = np.sort(step)[-2:][::-1]
        margins.append(round(float(first - second), margin_digits))
        llm.eval([tok])
        step = last_logits(llm)
    return logits, greedy, margins


def top_logits(logits, k):
    """The `k` largest logits as [token id, logit to 5 decimals], highest first (ties in
    id order)."""
    top = np.argsort(-logits, kind="stable")[:k]
    return [[int(t), round(float(logits[t]), 5)] for t in top]


def prompt_reference(llm, name, text, add_bos, greedy_tokens, top_k):
    """A prompt's entry as the fixtures store it: llama.cpp's token ids for `text`
    (special tokens parsed), the `top_k` logits after it, and `greedy_tokens` greedy tokens
    with their leads (5 decimals)."""
    ids = llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)
    logits, greedy, margins = run_prompt(llm, ids, greedy_tokens, 5)
    return {
        "name": name,
        "text": text,
        "token_ids": [int(t) for t in ids],
        "top_logits": top_logits(logits, top_k),
        "greedy": greedy,
        "greedy_margins": margins,
    }


def model_fixture(script, model, greedy_tokens, prompts, **between):
    """A model's fixture: the script and llama-cpp-python that made it, the model file and
    its SHA-256 (the tests check it), the fields in `between`, then the prompts."""
    return {
        "generator": f"scripts/reference/{script}",
        "llama_cpp_python": llama_cpp.__version__,
        "model_file": os.path.basename(model),
        "model_sha256": sha256(model),
        **between,
        "greedy_tokens": greedy_tokens,
        "prompts": prompts,
    }


def write_fixture(doc, out, **dump_args):
    """Writes `doc` as JSON (UTF-8 kept as is) with a final newline and says where."""
    with open(out, "w") as f:
        json.dump(doc, f, ensure_ascii=False, **dump_args)
        f.write("\n")
    path = os.path.abspath(out)
    inside = path.startswith(ROOT + os.sep)
    print("wrote", os.path.relpath(path, ROOT) if inside else path, file=sys.stderr)
