"""llama.cpp's quantizer and greedy decoder, run in llama.cpp's own environment (``.venv-llamacpp``).

This file is a script for that environment's Python, not a part of oikyo's import graph: it imports
only the standard library and the ``llama_cpp`` bindings (scripts/install-llamacpp.sh installs them),
and :mod:`oikyo.models.export_gguf` runs it in a subprocess::

    .venv-llamacpp/bin/python llamacpp_tool.py version
    .venv-llamacpp/bin/python llamacpp_tool.py quantize in-f16.gguf out-q4_k_m.gguf q4_k_m
    echo '{"prompts": [[1, 2, 3]], "max_tokens": 16, "stop": [2]}' | \\
        .venv-llamacpp/bin/python llamacpp_tool.py greedy model.gguf    # {"tokens": [[...]]}

Quantization is llama.cpp's own ``llama_model_quantize`` (the code behind its ``llama-quantize``
tool); greedy decoding uses llama.cpp's greedy sampler, so a GGUF file is checked the way llama.cpp
(and Ollama, which embeds it) will run it.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys

# The quantizations llama_model_quantize is asked for, by llama.cpp's ftype names.
FTYPES = {"q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M", "q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0", "f16": "LLAMA_FTYPE_MOSTLY_F16"}


def quantize(source: str, target: str, kind: str) -> None:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, FTYPES[kind])
    params.nthread = os.cpu_count() or 1
    status = llama_cpp.llama_model_quantize(source.encode(), target.encode(), ctypes.byref(params))
    if status != 0:
        raise SystemExit(f"llama_model_quantize failed with status {status}")


def greedy(model_path: str, request: dict) -> dict:
    """Greedy continuations of token-id prompts, each ending at a stop token or ``max_tokens``."""
    from llama_cpp import Llama

    longest = max(len(p) for p in request["prompts"]) + request["max_tokens"]
    llm = Llama(model_path=model_path, n_ctx=max(64, longest), n_threads=os.cpu_count() or 1, verbose=False)
    stop = set(request.get("stop") or [])
    found = []
    for prompt in request["prompts"]:
        tokens: list[int] = []
        for token in llm.generate(prompt, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0, reset=True):
            tokens.append(int(token))
            if token in stop or len(tokens) >= request["max_tokens"]:
                break
        found.append(tokens)
    return {"tokens": found}


def main(argv: list[str]) -> None:
    command = argv[0] if argv else ""
    if command == "version":
        import llama_cpp

        print(llama_cpp.__version__)
    elif command == "quantize" and len(argv) == 4 and argv[3] in FTYPES:
        quantize(argv[1], argv[2], argv[3])
    elif command == "greedy" and len(argv) == 2:
        print(json.dumps(greedy(argv[1], json.load(sys.stdin))))
    else:
        raise SystemExit(f"usage: llamacpp_tool.py version | quantize IN OUT {{{','.join(FTYPES)}}} | greedy MODEL")


if __name__ == "__main__":
    main(sys.argv[1:])
