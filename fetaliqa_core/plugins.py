"""What other packages add to the core: commands, benchmark probes and report writers registered as
Python entry points (``[project.entry-points."GROUP"]`` in their ``pyproject.toml``).

The core names no package that registers itself here; it only reads the groups below.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

COMMANDS = "fetaliqa.commands"  # fetaliqa <name>: a module with HELP, add_arguments(parser), run(args)
BENCH_PROBES = "fetaliqa.bench_probes"  # callable(BenchProbeInput) -> dict merged into the report's "gui"
REPORT_WRITERS = "fetaliqa.report_writers"  # <suffix>: callable(report, path) writing that format


def registered(group: str) -> dict[str, EntryPoint]:
    """The entry points of ``group`` by name (sorted; the first installed distribution wins a name)."""
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=group):
        found.setdefault(ep.name, ep)
    return dict(sorted(found.items()))


def load(group: str, name: str):
    """The object registered as ``name`` in ``group``, or None where nothing is registered."""
    ep = registered(group).get(name)
    return None if ep is None else ep.load()
