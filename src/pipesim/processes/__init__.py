"""Processes: fork or join (torchrun) the ranks, watch them, fail fast, leave nothing running.

    launch    start ranks on this machine or join torchrun's; the first failure ends the job
    watchdog  who is doing what (shared rows), and the stall report
    faults    fail one rank on purpose (tests of all of the above)
    malloc    keep freed memory (glibc), so steady steps do not page-fault
"""

__all__: list[str] = []  # import the modules named above
