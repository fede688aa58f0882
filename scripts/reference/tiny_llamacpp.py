#!/usr/bin/env python3
"""Reference logits from llama.cpp for the tiny random-weight GGUFs lem's converter writes.

Step 1 runs agent/tests/engine_tiny_llamacpp.rs with LEM_TINY_GGUF_OUT set: the test
writes three seeded tiny models (Llama-shaped with an untied LM head and GQA 4:2;
SmolLM2-shaped with tied embeddings and GQA 3:1; Qwen2-shaped with Q/K/V biases, written
as a `qwen2` GGUF) as safetensors checkpoints, converts each
to GGUF at f32, q8_0 and q4_0 with lem's converter, and lists them in manifest.json.
Step 2 runs every GGUF through llama.cpp (llama-cpp-python, CPU, f32 KV cache, no flash
attention, as lem computes) for fixed token-id inputs: the full last-token logit vector
and 12 greedy tokens (argmax of llama.cpp's logits, EOS not stopping it) with each step's
lead over the runner-up. Step 3 writes agent/tests/fixtures/tiny_llamacpp.json, which the
same test file compares lem's engine against. Only the GGUF bytes come from lem.

    ~/.cache/lem-llama-venv/bin/python scripts/reference/tiny_llamacpp.py [--ggufs DIR] [out.json]

--ggufs DIR skips step 1 and reads DIR/manifest.json (written earlier by step 1).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import llama_cpp

from common import ROOT, fixture_path, load, run_prompt, write_fixture

DEFAULT_OUT = fixture_path("tiny_llamacpp.json")
GREEDY_TOKENS = 12

# Token ids below the tiny vocabulary (77): BOS alone; a short mixed run; 40 ids from a
# fixed LCG, long enough that rotary positions and the KV cache matter.
def lcg_ids(n, seed, vocab=77):
    out, s = [], seed
    for _ in range(n):
        s = (s * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        out.append(3 + (s >> 33) % (vocab - 3))
    return out


INPUTS = [
    [1],
    [1, 40, 12, 7, 33, 60, 21, 5],
    [1] + lcg_ids(40, 2026),
]


def write_ggufs(out_dir):
    env = dict(os.environ, LEM_TINY_GGUF_OUT=out_dir)
    cmd = ["cargo", "test", "--workspace", "--test", "engine_tiny_llamacpp",
           "regenerated_ggufs_are_the_ones_llamacpp_ran"]
    print("+", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, cwd=ROOT, env=env, check=True)


def run_case(llm, ids):
    logits, greedy, margins = run_prompt(llm, ids, GREEDY_TOKENS, 6)
    return {
        "input": ids,
        # float32 from llama.cpp; repr of the f64 keeps every bit.
        "last_logits": [float(v) for v in logits],
        "greedy": greedy,
        "greedy_margins": margins,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ggufs", help="directory with manifest.json (skip writing the GGUFs)")
    ap.add_argument("out", nargs="?", default=DEFAULT_OUT)
    args = ap.parse_args()
    tmp = None
    if args.ggufs:
        gguf_dir = args.ggufs
    else:
        tmp = tempfile.TemporaryDirectory()
        gguf_dir = tmp.name
        write_ggufs(gguf_dir)
    with open(os.path.join(gguf_dir, "manifest.json")) as f:
        manifest = json.load(f)
    models = []
    for m in manifest:
        path = os.path.join(gguf_dir, m["file"])
        llm = load(path, 256, logits_all=True)
        cases = [run_case(llm, ids) for ids in INPUTS]
        models.append({
            "model": m["model"],
            "dtype": m["dtype"],
            "file": m["file"],
            "content_sha256": m["content_sha256"],
            "n_vocab": llm.n_vocab(),
            "cases": cases,
        })
        print(m["file"], "greedy", [c["greedy"][:6] for c in cases],
              "min lead", min(min(c["greedy_margins"]) for c in cases), file=sys.stderr)
        del llm
    doc = {
        "generator": "scripts/reference/tiny_llamacpp.py",
        "llama_cpp_python": llama_cpp.__version__,
        "greedy_tokens": GREEDY_TOKENS,
        "models": models,
    }
    write_fixture(doc, args.out, indent=None, separators=(",", ":"))


if __name__ == "__main__":
    main()
