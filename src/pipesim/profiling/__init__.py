"""Profiling a model: per-layer costs measured on this machine, and cutting a model by them.

    profiler      per-layer F/I/W/optimizer times, in fresh processes
    comm          message latency, bandwidth and send overhead (a 2-rank gloo ping-pong)
    partitioning  cut an nn.Sequential into stages (uniform, by parameters, by measured time)
    api           ``pipesim.profile(layers, example, ...)``
"""

__all__: list[str] = []  # import the modules named above
