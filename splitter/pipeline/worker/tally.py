"""Whether a source transaction arrived whole: its records counted as capture counted them, against its commit.

Capture numbers the records of a transaction as it writes them (rows of every table and transactional
messages; `source.sequence` of a row is how many came before it) and writes that count into the commit
record (`CommitMarker.events`).  A worker counts every record of the transaction it is reading, of every
table, before it skips the tables it does not route, and at the commit record refuses a transaction whose
records do not add up.  Owns: that count, where the copy being read began (capture sends a transaction
again whole after a crash; a row whose sequence goes back begins the new copy), the error that refuses
a transaction, and the stops that tell an operator to go past a gap (`log_gone`, `skip_and_recopy`).
Must not: apply, commit or move the read position (the loop does, and applies nothing of
a refused transaction), or decode more of a record than its sequence.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from splitter.core.envelope import CommitMarker
from splitter.core.errors import FatalError
from splitter.core.lsn import lsn_to_str


@dataclass(slots=True)
class Reading:
    """The copy of one source transaction being read: where it began and what it counted so far."""

    commit_lsn: int
    first_offset: int
    count: int = 0
    rows: int = 0  # records of it with a sequence (rows whose value could be read)
    # Offsets of the records since its last row that carry no sequence (transactional messages, rows whose
    # value could not be read): a new copy may have begun at one of them.
    unsequenced: list[int] = field(default_factory=list)
    fault: str | None = None  # the first record that did not follow: a record missing before it, or repeated


class Tally:
    """The transaction a worker is reading, counted record by record."""

    def __init__(self) -> None:
        self.reading: Reading | None = None

    def reset(self) -> None:
        """Forget the transaction being read (it is read again, or it was an incomplete copy)."""
        self.reading = None

    def count(self, offset: int, commit_lsn: int, sequence: int | None) -> bool:
        """Count a record of the transaction `commit_lsn` (`sequence`: a row's, None for a record without one).

        True when the record shows that a new copy of the transaction began (capture sent it again): what was
        read of the earlier copy is incomplete and must be dropped.
        """
        r = self.reading
        if r is None or r.commit_lsn != commit_lsn:
            r = self.reading = Reading(commit_lsn, offset)
        restarted = False
        if sequence is None:
            r.unsequenced.append(offset)
        else:
            if sequence != r.count:
                if sequence < r.count and sequence <= len(r.unsequenced):
                    # A new copy began `sequence` records ago: at this row, or at one of the records without a
                    # sequence just before it.
                    began = r.unsequenced[-sequence] if sequence else offset
                    r = self.reading = Reading(commit_lsn, began, count=sequence)
                    restarted = True
                elif r.fault is None:
                    r.fault = (f"the record at offset {offset} is number {sequence} of the transaction where "
                               f"number {r.count} was due")
            r.rows += 1
            r.unsequenced.clear()
        r.count += 1
        return restarted

    def resume_offset(self, commit_lsn: int, offset: int) -> int:
        """Where to read the transaction `commit_lsn`, whose record at `offset` is in hand, again from."""
        r = self.reading
        return r.first_offset if r is not None and r.commit_lsn == commit_lsn else offset

    def close(self, marker: CommitMarker, offset: int) -> Reading | None:
        """The commit record at `offset` ends the transaction: None if it is whole, else what was read of it.

        A copy without a row (transactional messages only) cannot show where a copy sent again began: it is
        whole when at least as many records arrived as the commit counts.
        """
        r = self.reading
        self.reading = None
        if r is None or r.commit_lsn != marker.commit_lsn:
            return Reading(marker.commit_lsn, offset, fault="none of its records precede its commit record")
        if r.fault is None and (r.count == marker.events or (r.rows == 0 and r.count > marker.events)):
            return None
        return r


def refused(service: str, marker: CommitMarker, read: Reading, commit_offset: int, tables: str) -> FatalError:
    """The error a worker stops with at a transaction whose records do not add up."""
    why = f"; {read.fault}" if read.fault else ""
    return FatalError(
        f"service {service}: transaction xid {marker.xid} (commit LSN {lsn_to_str(marker.commit_lsn)}, offsets "
        f"{read.first_offset}..{commit_offset}) is not whole in the change log: its commit record counts "
        f"{marker.events} record(s), the log holds {read.count}{why}. Nothing of it was applied, and the service "
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
