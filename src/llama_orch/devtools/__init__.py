"""Tools for developers and CI: the real llama-server build, the tiny model, contract fuzzing."""
