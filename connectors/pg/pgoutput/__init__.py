"""PostgreSQL's ``pgoutput`` logical replication messages: their values and their decoder.

- :mod:`connectors.pg.pgoutput.messages`: the immutable message values and column-value forms.
- :mod:`connectors.pg.pgoutput.wire`: byte-level readers and the malformed-message error.
- :mod:`connectors.pg.pgoutput.decoder`: ``PgOutputDecoder`` and ``decode_message``, bytes to values.

Nothing here does I/O or imports a driver; importers name the module they need (no re-exports here).
"""
