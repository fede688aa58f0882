#!/usr/bin/env python3
"""llama.cpp on the same GGUF, for the side-by-side rows of docs/benchmarks.md.

Needs `llama-cpp-python` (PyPI; built from source here, never committed): the venv that
scripts/setup-llama-server.sh makes (~/.cache/lem-llama-venv) and prints the python of:
    "$(scripts/setup-llama-server.sh)" scripts/bench-llamacpp.py [RUNS] [THREADS] [BATCHES]
(that build uses every instruction set of the host; scripts/setup-llama-avx2.sh makes an
AVX2-only one). The first line printed is llama.cpp's system info.

Measures what scripts/bench-cpu.sh measures for lem: BATCH prompts of 128 tokens
prefilled together, then 63 greedy decode steps for all of them; tok/s over forward
passes only (`llama_decode` calls), all sequences counted; median of RUNS after a warmup.
BATCHES is a comma-separated list (default `1,8`).

It drives llama.cpp's own batch API (`llama_batch` with one sequence id per prompt, one
context with `n_seq_max` = BATCH), as llama.cpp's `llama-batched-bench` does: the prefill
is one `llama_decode` of BATCH x 128 tokens, each decode step one `llama_decode` of BATCH
tokens. Batch 1 is the same code with one sequence.
"""
import ctypes
import os
import statistics
import sys
import time

import numpy as np
import llama_cpp as C

runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
threads = int(sys.argv[2]) if len(sys.argv) > 2 else 2
batches = [int(b) for b in (sys.argv[3] if len(sys.argv) > 3 else "1,8").split(",")]
model_path = os.environ.get(
    "LEM_TEST_MODEL",
    os.path.expanduser(
        "~/.cache/lem/models/HuggingFaceTB--SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf"
    ),
)
PROMPT, NEW = 128, 64

C.llama_backend_init()
# The instruction sets this llama.cpp was compiled with (e.g. no AVX512 in an AVX2-only
# build from scripts/setup-llama-avx2.sh), so a side by side records what ran.
print(f"llama.cpp system info: {C.llama_print_system_info().decode().strip()}", flush=True)
_quiet = C.llama_log_callback(lambda *a: None)  # kept referenced: llama.cpp calls it later
C.llama_log_set(_quiet, ctypes.c_void_p(0))
mparams = C.llama_model_default_params()
model = C.llama_model_load_from_file(model_path.encode(), mparams)
assert model, model_path
vocab = C.llama_model_get_vocab(model)
n_vocab = C.llama_vocab_n_tokens(vocab)


def tokenize(text):
    buf = (C.llama_token * 4096)()
    n = C.llama_tokenize(vocab, text.encode(), len(text.encode()), buf, 4096, False, True)
    assert n > 0
    return list(buf[:n])


base = "The river flows through the old town, past the market and the bridge. " * 20
words = base.split()
# Distinct prompts per row (rotated text), each cut to exactly 128 tokens.
prompts = [tokenize(" ".join(words[r:] + words[:r]))[:PROMPT] for r in range(max(batches))]
assert all(len(p) == PROMPT for p in prompts)


def run_batch(b):
    cparams = C.llama_context_default_params()
    cparams.n_ctx = b * (PROMPT + NEW)
    cparams.n_batch = b * PROMPT
    cparams.n_ubatch = b * PROMPT
    cparams.n_seq_max = b
    cparams.n_threads = threads
    cparams.n_threads_batch = threads
    ctx = C.llama_init_from_model(model, cparams)
    assert ctx
    mem = C.llama_get_memory(ctx)
    batch = C.llama_batch_init(b * PROMPT, 0, 1)

    def fill(entries):
        # entries: (token, pos, seq, want_logits)
        batch.n_tokens = len(entries)
        for i, (tok, pos, seq, logits) in enumerate(entries):
            batch.token[i] = tok
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = 1 if logits else 0

    def argmax(i):
        ptr = C.llama_get_logits_ith(ctx, i)
        return int(np.argmax(np.ctypeslib.as_array(ptr, shape=(n_vocab,))))

    prefill, decode = [], []
    for run in range(runs + 1):  # the first run warms up and is discarded
        C.llama_memory_clear(mem, True)
        fill(
            [
                (prompts[s][p], p, s, p == PROMPT - 1)
                for s in range(b)
                for p in range(PROMPT)
            ]
        )
        t0 = time.perf_counter()
        assert C.llama_decode(ctx, batch) == 0
        t_prefill = time.perf_counter() - t0
        last = [argmax(s * PROMPT + PROMPT - 1) for s in range(b)]
        t_decode = 0.0
        for step in range(NEW - 1):
            fill([(last[s], PROMPT + step, s, True) for s in range(b)])
            t0 = time.perf_counter()
            assert C.llama_decode(ctx, batch) == 0
            t_decode += time.perf_counter() - t0
            last = [argmax(s) for s in range(b)]
        if run > 0:
            prefill.append(b * PROMPT / t_prefill)
            decode.append(b * (NEW - 1) / t_decode)
    C.llama_batch_free(batch)
    C.llama_free(ctx)
    print(
        f"llama.cpp batch {b}: runs {runs}  decode {statistics.median(decode):.1f} tok/s "
        f"(min {min(decode):.1f}, max {max(decode):.1f})  "
        f"prefill {statistics.median(prefill):.1f} tok/s "
        f"(min {min(prefill):.1f}, max {max(prefill):.1f})",
        flush=True,
    )


for b in batches:
    run_batch(b)
C.llama_model_free(model)
