"""`splitter verify`: does each service table hold exactly the topology's projection of its source table?

The package, by job:
  * `run`: choosing the tables and running the comparison, table by table (the entry points
    `verify` and `verify_quiesced`);
  * `snapshot`: the consistent point (below): holding the workers, the snapshots, the release;
  * `merge`: merging the rows of differing chunks into a table's report;
  * `report`: the report (per table: rows on each side, missing / extra / different with a sample of
    keys and the columns that differ) and its JSON and human forms;
  * `progress`: where a verify is, and the progress line on a terminal.
The `verify` subcommand is `splitter.cli.commands.verify`.

The consistent point (VDiff style), while the pipeline runs and the source takes writes:
  1. Every selected service's worker is asked to hold at the source's current WAL position Q and
     reports that it holds.  This pre-hold exists because a worker only stops at the *first*
     transaction at or past the requested LSN: were it still running when the slot below fixes P,
     it could apply past P before it reads the request (it polls every ~200 ms), and P would be
     lost.  Held at Q, it can only be behind P.
  2. A TEMPORARY logical slot is created with an exported snapshot: (LSN P, snapshot S).  The
     source is read in one REPEATABLE READ transaction importing S, i.e. exactly the transactions
     committed before P.  Once imported, the transaction keeps that snapshot by itself, so the
     replication connection (and its slot, which would otherwise retain WAL for as long as a
     large verify runs) is closed right after the import.
  3. Each worker is moved to hold at P; when it reports it holds (having applied every
     transaction committed before P and nothing at or after), a REPEATABLE READ transaction is
     opened in its database, whose first read re-checks the hold and the checkpoint inside the
     very snapshot that will be compared.  The hold is then released at once (always, in
     `finally`): the workers stop only for as long as taking these snapshots takes, not for the
     comparison.
With `consistent=False` both sides are read as they are (for a source known to be idle and
workers known to be caught up).

Comparison: see `connectors.pg.verify_sql` (chunked hashes computed in the databases; only the rows
of differing chunks travel, both sides ordered by (chunk, key), merged here in one pass).  Memory is
flat in table size: bytes are piped, rows are streamed, and only the samples are kept.

Must not (every module here): import a database driver (connectors do the I/O), write to the source,
or leave a worker held.
"""
