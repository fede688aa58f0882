#!/usr/bin/env python3
"""Reference token ids for SmolLM2-135M-Instruct's GGUF tokenizer, from transformers.

transformers builds a Hugging Face tokenizer from a GGUF's tokenizer metadata
(`transformers.integrations.gguf.gguf_tokenizer_mapping.convert_gguf_tokenizer`, the code
behind `AutoTokenizer.from_pretrained(dir, gguf_file=...)`); the metadata is read with
llama.cpp's `gguf` package. Nothing from lem. agent/tests/engine_smollm2.rs
(`tokenizer_matches_transformers_reference`) compares lem's GGUF tokenizer with what this
prints.

    python3 -m pip install transformers gguf numpy
    python3 scripts/reference/smollm2_tokens.py [path/to/SmolLM2-135M-Instruct.Q4_1.gguf]

`AutoTokenizer` itself imports PyTorch on the GGUF path; the converter it calls does not,
so this runs without PyTorch.
"""
import json
import os
import sys

from gguf import GGUFReader, GGUFValueType
from transformers.integrations.gguf.gguf_tokenizer_mapping import (
    GGUF_TOKENIZER_MAPPING,
    convert_gguf_tokenizer,
)

DEFAULT = os.path.expanduser(
    "~/.cache/lem/models/HuggingFaceTB--SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf"
)
CASES = [
    "The quick brown fox jumps over the lazy dog.",
    "12345",
    " leading space",
    "café ☕",
    "Hello,  world!\n\tTabs and\nnewlines 3.14159",
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
    "<|im_start|>assistant\n",
]


def value(field):
    """A metadata field as a Python value (strings decoded, arrays as lists)."""
    def one(part, vtype):
        return bytes(part).decode("utf-8") if vtype == GGUFValueType.STRING else part.tolist()[0]

    if field.types[0] == GGUFValueType.ARRAY:
        return [one(field.parts[i], field.types[-1]) for i in field.data]
    return one(field.parts[field.data[0]], field.types[0])


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else DEFAULT
    reader = GGUFReader(path)
    meta = {name: value(f) for name, f in reader.fields.items() if name.startswith(("tokenizer.", "general.architecture"))}
    tokenizer_dict = {
        name: meta[f"tokenizer.{key}"]
        for key, name in GGUF_TOKENIZER_MAPPING["tokenizer"].items()
        if f"tokenizer.{key}" in meta
    }
    backend, _ = convert_gguf_tokenizer(meta["general.architecture"], tokenizer_dict)
    for text in CASES:
        print(json.dumps(text, ensure_ascii=False), backend.encode(text, add_special_tokens=True).ids)


if __name__ == "__main__":
    main()
