"""The planner: which schedule, microbatch count, partition and data-parallel split to run.

    search        the search over schedules x microbatches x partitions (``plan``, ``plan_world``)
    results       its records: Config, Candidate, Rejected, Skipped, PlanResult
    score         one configuration's peak memory and simulated step (``evaluate``)
    space         what the search ranges over, its limits and memory strings ("2GB")
    dataparallel  the data-parallel (ring all-reduce) cost model and its simulation
    command       the command (or Python call) that runs a chosen configuration
    api           ``pipesim.plan(costs, ...)``: the best configuration as Pipeline's arguments
Pure Python, like the rest of the core.
"""

__all__: list[str] = []  # import the modules named above
