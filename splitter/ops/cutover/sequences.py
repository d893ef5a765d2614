"""Moving sequences at a switch: every sequence of the new home passes what the old home handed out.

Owns: which sequence must reach which value (`advance_sequences`).  Must not: run SQL itself
(`connectors.pg.sequences` reads and sets sequences) or know which tables a service has (the caller
passes the pairs, from `splitter.topology.inversion.exact_copies`).
"""

from __future__ import annotations

from collections.abc import Sequence

from connectors.pg.client import Connection
from connectors.pg.sequences import column_max, last_value, owned_sequences, set_last_value

#: (ahead table, behind table, {behind column: ahead column it copies}); a table is (schema, name).
TablePair = tuple[tuple[str, str], tuple[str, str], dict[str, str]]


def advance_sequences(ahead: Connection, behind: Connection, tables: Sequence[TablePair]) -> list[str]:
    """Move every sequence owned by a `behind` table's column past what `ahead` has handed out.

    `tables`: (ahead table, behind table, {behind column: ahead column it copies}).  A behind sequence
    ends at least at: its own column's max, the matching ahead column's max and that column's own
    sequence.  Sequences are only ever moved forward (ascending sequences).  Returns what was done.
    """
    done = []
    for (a_schema, a_table), (b_schema, b_table), columns in tables:
        ahead_seqs = owned_sequences(ahead, a_schema, a_table)
        for column, seq in owned_sequences(behind, b_schema, b_table).items():
            candidates = [column_max(behind, b_schema, b_table, column)]
            twin = columns.get(column)
            if twin is not None:
                candidates.append(column_max(ahead, a_schema, a_table, twin))
                if twin in ahead_seqs:
                    candidates.append(last_value(ahead, ahead_seqs[twin]))
            wanted = max((c for c in candidates if c is not None), default=None)
            current = last_value(behind, seq)
            if wanted is not None and (current is None or wanted > current):
                set_last_value(behind, seq, wanted)
                done.append(f"{seq} → {wanted}")
    return done


__all__ = ["TablePair", "advance_sequences"]
