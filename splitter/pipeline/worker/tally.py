"""Whether a source transaction arrived whole: its records counted as capture counted them, against its commit.

Capture numbers the records of a transaction as it writes them (rows of every table and transactional
messages; `source.sequence` of a row is how many came before it) and writes into the commit record how
many there were (`CommitMarker.events`) and how many rows of each table (`CommitMarker.tables`).  A worker
never reads other services' rows (the consumer drops them by their key), so it checks its own tables: each
must have as many rows in the copy read as the commit counts, and every transactional message must be there.
In a log written before commits carried `tables`, every record of every table came to the worker, and the
whole count is checked instead.  Owns: those counts, where the copy being read began (capture sends a
transaction again whole after a crash; a row whose sequence goes back begins the new copy), the error that
refuses a transaction, and the stops that tell an operator to go past a gap (`log_gone`, `skip_and_recopy`).
Must not: apply, commit or move the read position (the loop does, and applies nothing of a refused
transaction), or decode more of a record than its sequence.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from splitter.core.envelope import CommitMarker
from splitter.core.errors import FatalError
from splitter.core.lsn import lsn_to_str

#: What an unsequenced record is, beside its offset: a transactional message, or a row whose value could not
#: be read (its table, or None when it came skimmed).
MESSAGE = b""


@dataclass(slots=True)
class Reading:
    """The copy of one source transaction being read: where it began and what it counted so far."""

    commit_lsn: int
    first_offset: int
    count: int = 0
    rows: int = 0  # records of it with a sequence (rows whose value could be read)
    last_sequence: int = -1
    # The records since its last row that carry no sequence (transactional messages, rows whose value could
    # not be read), as (offset, MESSAGE or table): a new copy may have begun at one of them.
    unsequenced: list[tuple[int, bytes | None]] = field(default_factory=list)
    by_table: dict[bytes, int] = field(default_factory=dict)  # its rows, per table
    messages: int = 0  # its transactional messages
    # The first record that did not follow: a record missing before it, or repeated.  Checked only in a log
    # without per-table counts, where every record reaches the worker (else rows of other tables are left out).
    fault: str | None = None

    def add(self, kind: bytes | None) -> None:
        if kind == MESSAGE:
            self.messages += 1
        elif kind is not None:
            self.by_table[kind] = self.by_table.get(kind, 0) + 1


class Tally:
    """The transaction a worker is reading, counted record by record."""

    def __init__(self) -> None:
        self.reading: Reading | None = None
        # The worker's tables in order, each with the name commit records count it by: every worker checks
        # every commit record, so they are worked out once per set of tables, not per commit.
        self._tables: Collection[bytes] | None = None
        self._names: tuple[tuple[bytes, str], ...] = ()

    def reset(self) -> None:
        """Forget the transaction being read (it is read again, or it was an incomplete copy)."""
        self.reading = None

    def count(self, offset: int, commit_lsn: int, sequence: int | None, kind: bytes | None = None) -> bool:
        """Count a record of the transaction `commit_lsn`: `sequence` a row's (None for a record without one),
        `kind` its table (b"schema.table"), MESSAGE for a transactional message, None for a skimmed row.

        True when the record shows that a new copy of the transaction began (capture sent it again): what was
        read of the earlier copy is incomplete and must be dropped.
        """
        r = self.reading
        if r is None or r.commit_lsn != commit_lsn:
            r = self.reading = Reading(commit_lsn, offset)
        restarted = False
        if sequence is None:
            r.unsequenced.append((offset, kind))
        else:
            if sequence <= r.last_sequence or (sequence < r.count and sequence <= len(r.unsequenced)):
                r = self.reading = self._new_copy(r, offset, sequence)
                restarted = True
            elif sequence != r.count and r.fault is None:
                r.fault = (f"the record at offset {offset} is number {sequence} of the transaction where "
                           f"number {r.count} was due")
            r.rows += 1
            r.last_sequence = sequence
            r.unsequenced.clear()
        r.add(kind)
        r.count += 1
        return restarted

    @staticmethod
    def _new_copy(r: Reading, offset: int, sequence: int) -> Reading:
        """The copy that begins at the row at `offset` (number `sequence`), or at a record without a sequence
        just before it: as many of those as come before the row in its transaction, where that many were read
        (a whole log); else the row did not follow what was read (a whole log) or rows of other tables before
        it were left out, and the copy takes every record without a sequence since the last row."""
        if sequence <= len(r.unsequenced):
            taken = r.unsequenced[len(r.unsequenced) - sequence:]
            fault = None
        else:
            taken = r.unsequenced
            fault = (f"the record at offset {offset} is number {sequence} of the transaction where number "
                     f"{r.count} was due")
        copy = Reading(r.commit_lsn, taken[0][0] if taken else offset, count=sequence, fault=fault)
        for _, kind in taken:
            copy.add(kind)
        return copy

    def resume_offset(self, commit_lsn: int, offset: int) -> int:
        """Where to read the transaction `commit_lsn`, whose record at `offset` is in hand, again from."""
        r = self.reading
        return r.first_offset if r is not None and r.commit_lsn == commit_lsn else offset

    def close(self, marker: CommitMarker, offset: int, tables: Collection[bytes]) -> Reading | None:
        """The commit record at `offset` ends the transaction: None if it is whole for the worker of `tables`,
        else what was read of it (its `fault` says what is missing).

        A copy without a row (transactional messages only) cannot show where a copy sent again began: it is
        whole when at least as many messages arrived as the commit counts.
        """
        r = self.reading
        self.reading = None
        if r is not None and r.commit_lsn != marker.commit_lsn:
            r = None
        if marker.tables is None:  # a log written before commits counted rows per table: every record came
            if r is None:
                return Reading(marker.commit_lsn, offset, fault="none of its records precede its commit record")
            if r.fault is None and (r.count == marker.events or (r.rows == 0 and r.count > marker.events)):
                return None
            return r
        read = r if r is not None else Reading(marker.commit_lsn, offset)
        if tables is not self._tables:
            self._tables, self._names = tables, tuple((t, t.decode(errors="replace")) for t in sorted(tables))
        short = []
        for table, name in self._names:
            counted, held = marker.tables.get(name, 0), read.by_table.get(table, 0)
            if held != counted:
                short.append(f"{counted} row(s) of {name}, the log holds {held}")
        messages = marker.events - sum(marker.tables.values())
        if read.messages < messages:
            short.append(f"{messages} transactional message(s), the log holds {read.messages}")
        if not short:
            return None
        read.fault = "its commit record counts " + "; ".join(short)
        return read


def refused(service: str, marker: CommitMarker, read: Reading, commit_offset: int, tables: str) -> FatalError:
    """The error a worker stops with at a transaction whose records do not add up."""
    if marker.tables is None:
        why = f"; {read.fault}" if read.fault else ""
        what = f"its commit record counts {marker.events} record(s), the log holds {read.count}{why}"
    else:
        what = read.fault or "it does not add up"
    return FatalError(
        f"service {service}: transaction xid {marker.xid} (commit LSN {lsn_to_str(marker.commit_lsn)}, offsets "
        f"{read.first_offset}..{commit_offset}) is not whole in the change log: {what}. Nothing of it was "
        f"applied, and the service "
        f"stops here whatever its on_error (a record missing from the log is not a row to set aside). "
        f"{skip_and_recopy(service, commit_offset + 1, tables)}")


def log_gone(service: str, why: str, offset: int, lsn: int, tables: str) -> FatalError:
    """The stop of a worker whose log no longer holds what follows its checkpoint (at `offset`, `lsn`)."""
    return FatalError(
        f"service {service}: {why}. It applied the log up to offset {offset} (commit LSN {lsn_to_str(lsn)}); the "
        f"changes after that can no longer be read, so it stops rather than go on without them. "
        f"{skip_and_recopy(service, '<the earliest offset the log holds>', tables)}")


def skip_and_recopy(service: str, from_offset: int | str, tables: str) -> str:
    """How an operator takes a service past what its log lacks: replay past it, then re-copy its tables."""
    return (f"To recover: `splitter replay --service {service} --from-offset {from_offset} --accept-gap --yes`, "
            f"restart this worker, then re-copy each table while it streams: `splitter backfill --service "
            f"{service} --table T` for T in {tables}")
