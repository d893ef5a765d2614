"""Loading `topology.py`: run it, take its TOPOLOGY, and check everything that needs no database.

Owns: `load_topology` (the one way a topology file becomes a `Topology`) and `validate` (the checks of
the declarations themselves, `Topology.validate`, then the ownership checks of shared tables,
`splitter.topology.ownership.ownership_problems`, which build on the model and so cannot live in it).
Must not: connect to a database (`splitter plan` checks against the catalogs) or render SQL.
"""

from __future__ import annotations

import runpy
from pathlib import Path

from splitter.core.errors import ConfigurationError
from splitter.topology.model import Topology
from splitter.topology.ownership import ownership_problems


def validate(topology: Topology) -> None:
    """Every check that needs no database; raises ConfigurationError naming file and line of each problem."""
    topology.validate()
    problems = ownership_problems(topology)
    if problems:
        raise ConfigurationError("topology is invalid:\n  " + "\n  ".join(problems))


def load_topology(path: str | Path) -> Topology:
    """Run `path` (a topology.py) and return its `TOPOLOGY`, validated."""
    path = Path(path)
    if not path.is_file():
        raise ConfigurationError(f"topology file {path} does not exist")
    try:
        namespace = runpy.run_path(str(path))
    except ConfigurationError:
        raise
    except Exception as exc:
        raise ConfigurationError(f"{path}: cannot load topology: {type(exc).__name__}: {exc}") from exc
    topology = namespace.get("TOPOLOGY")
    if not isinstance(topology, Topology):
        raise ConfigurationError(f"{path}: must define TOPOLOGY = Topology(...)")
    validate(topology)
    return topology


__all__ = ["load_topology", "validate"]
