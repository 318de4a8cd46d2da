"""How ``make test``'s two pytest-xdist workers share the suite: by group, costliest first.

pytest-xdist's own ``--dist loadgroup`` reads a group from a suffix it appends to each test's node
id; pytest 9.2 builds node ids another way and drops the suffix, so every group was split across
the workers and each built the shared releases and models again (found from ``--durations``: the
256 px generator, the seed-11 release and the AttFind release were each built twice). This
scheduler takes the group from the test's file instead (``GROUPS`` in ``conftest.py``), so it
depends on no suffix, and hands a free worker the costliest group left (longest processing time
first), so the two workers finish close together. A group may be split further by its tests'
first parameter (``split``: the releases' seeds), when each value has fixtures of its own.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import PurePosixPath

from xdist.scheduler import LoadScopeScheduling


def group_of(nodeid: str, groups: dict, split: dict | None = None) -> str:
    """The group of a test: its file's group in ``groups``, or its file's stem alone; for a group
    in ``split``, ``group[value]`` when the test's first parameter id is one of ``split[group]``
    (``test_x[7-encoder]`` -> ``releases[7]``)."""
    stem = PurePosixPath(nodeid.split("::", 1)[0]).stem
    group = next((g for g, files in groups.items() if stem in files), stem)
    first = re.search(r"\[([^\]-]+)", nodeid.split("::", 1)[-1])
    if split and group in split and first and first.group(1) in split[group]:
        return f"{group}[{first.group(1)}]"
    return group


class CostliestFirst(OrderedDict):
    """A work queue whose next unit is the one of highest estimated cost (ties: the order added)."""

    def __init__(self, cost):
        super().__init__()
        self.cost = cost

    def popitem(self, last: bool = True):
        if not self:
            raise KeyError("popitem(): the work queue is empty")
        scope = max(self, key=lambda s: (self.cost(s, self[s]), -list(self).index(s)))
        return scope, self.pop(scope)


class GroupScheduling(LoadScopeScheduling):
    """LoadScope scheduling whose scope is the test's group; units go out costliest first."""

    def __init__(self, config, log=None, *, groups: dict, minutes: dict, split: dict | None = None):
        super().__init__(config, log)
        self.groups, self.split = groups, split
        self.workqueue = CostliestFirst(lambda scope, tests: minutes.get(scope, 0.01 * len(tests)))

    def _split_scope(self, nodeid: str) -> str:
        return group_of(nodeid, self.groups, self.split)
