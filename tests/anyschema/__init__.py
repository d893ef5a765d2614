"""A second source schema and topology, used only by tests: every type with its edge values, every table shape.

Owns: the DDL (`schema.sql`, run in the source and in each service database alike), the topology over it
(`topology.py`) and the edge values (`values.py`), so that the whole pipeline is proven on a schema that is
not bento_social's.  Must not: be imported by production code (it lives under `tests/`).
"""
