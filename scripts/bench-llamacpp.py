#!/usr/bin/env python3
"""llama.cpp on the same GGUF, for the side-by-side rows of docs/benchmarks.md.

Needs `llama-cpp-python` (PyPI; builds llama.cpp from source here, never committed):
    python3 -m venv ~/.cache/lem-llamacpp-venv
    ~/.cache/lem-llamacpp-venv/bin/pip install llama-cpp-python
    ~/.cache/lem-llamacpp-venv/bin/python scripts/bench-llamacpp.py [RUNS] [THREADS]

Measures what scripts/bench-cpu.sh measures for lem at batch 1: prefill of a 128-token
prompt, then 63 greedy decode steps; tok/s over forward passes only; median of RUNS.
"""
import os
import statistics
import sys
import time

import numpy as np
from llama_cpp import Llama

runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
threads = int(sys.argv[2]) if len(sys.argv) > 2 else 2
model = os.environ.get(
    "LEM_TEST_MODEL",
    os.path.expanduser(
        "~/.cache/lem/models/HuggingFaceTB--SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf"
    ),
)
llm = Llama(
    model_path=model,
    n_threads=threads,
    n_threads_batch=threads,
    n_ctx=512,
    n_batch=512,
    verbose=False,
)
text = "The river flows through the old town, past the market and the bridge. " * 20
prompt = llm.tokenize(text.encode(), add_bos=False)[:128]
assert len(prompt) == 128

prefill, decode = [], []
for run in range(runs + 1):  # the first run warms up and is discarded
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(prompt)
    t_prefill = time.perf_counter() - t0
    t_decode = 0.0
    for _ in range(63):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        t0 = time.perf_counter()
        llm.eval([token])
        t_decode += time.perf_counter() - t0
    if run > 0:
        prefill.append(len(prompt) / t_prefill)
        decode.append(63 / t_decode)

print(
    f"llama.cpp batch 1: runs {runs}  decode {statistics.median(decode):.1f} tok/s "
    f"(min {min(decode):.1f}, max {max(decode):.1f})  prefill {statistics.median(prefill):.1f} tok/s"
)
