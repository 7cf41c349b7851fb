"""Views of schedules and timelines: text grids, ASCII charts, Chrome traces, PNG, HTML.

Each takes a Schedule or a Timeline and returns text/bytes; none prints and none imports torch.
"""


__all__: list[str] = []  # everything lives in the submodules
