"""The benchmark harness (not part of the pipesim wheel): pipesim vs torch.distributed.pipelining,
distance to the limits, messages, start-up.

Run it from a checkout: ``python benchmarks/run.py`` (``make bench``). Modules import each other
relatively, so the package works as ``harness`` (run.py puts benchmarks/ on sys.path) and as
``benchmarks.harness`` (the tests, from the repository root).
"""
