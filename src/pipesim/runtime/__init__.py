"""The only torch code in pipesim: stages, messages, the schedule interpreter and the launcher.

Depends on the core (ir, schedules, validate, timeline); the core never imports it.
"""


__all__: list[str] = []  # everything lives in the submodules
