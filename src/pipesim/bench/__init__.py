"""Benchmarks of the runtime: pipesim vs torch.distributed.pipelining, distance to the limits."""
