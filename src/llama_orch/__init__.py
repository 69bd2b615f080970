"""llama-orch: one typed event stream over llama.cpp, vLLM, TGI and Triton.

Hand-written, thin layer over the generated code in `llama_orch_gen` (see specs/ and `python xtask.py regen`).
"""

__version__ = "0.1.0"
