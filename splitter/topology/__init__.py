"""Topology: the model and loader, expression analysis and SQL rendering."""

from splitter.topology.loading import load_topology
from splitter.topology.model import Service, Table, Topology

__all__ = ["Service", "Table", "Topology", "load_topology"]
