"""Pure models of vLLM: how startup accounts for GPU memory (memory.py) and how much a
configuration serves under load (serving.py), from vllm/memory_model.md.

Pure functions of a scenario (schemas.scenario) and a ServingConfig: no clock, no files, no
randomness, no text; the same inputs give the same result, byte for byte. They import nothing
of selfheal but selfheal.schemas and each other, so a handler may predict with them and the
simulator (edges/sim) renders their results as vLLM's own log lines.
"""
