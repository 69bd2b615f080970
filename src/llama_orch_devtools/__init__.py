"""Tools for developers and CI, run through `python xtask.py`: the real engine builds, the tiny models, contract
fuzzing and the benchmarks. Not installed: the wheel lists only `llama_orch` and `llama_orch_gen` (pyproject.toml).
"""
