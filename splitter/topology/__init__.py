"""Topology: the model and loader, expression analysis and SQL rendering."""

from splitter.topology.model import Service, Table, Topology, load_topology

__all__ = ["Service", "Table", "Topology", "load_topology"]
