"""Applying a batch the service database refused as a whole again, one source transaction at a time.

A collapsed batch writes each row once, ordered by the row's last change.  A unique index other than the
key, or an exclusion constraint, checks row by row, and can refuse that order although every state the
source committed was valid: a value one row gives up in a later transaction is taken by another row
first.  Owns: the fallback, in the open target transaction (still one commit and one checkpoint):
deferrable constraints deferred to the commit; each source transaction collapsed on its own, in a
savepoint, in source order; a transaction still refused by such a constraint (values moving between rows
within it: a swap) written as delete-then-insert for the source tables of the refusing target table,
when the sink finds nothing that would make that differ from updating; and what is left: a change
invalid in any order (returned: the caller's `on_error` decides), or a valid transaction that cannot be
written safely here (FatalError naming what to change).  Must not: commit, roll back the whole
transaction or apply `on_error` (`commit` does).
"""

from __future__ import annotations

from collections.abc import Sequence

from connectors.pg.sink_values import ApplyMode, Rejected
from splitter.core.batching import Segment, Step, by_transaction, replacing
from splitter.core.errors import FatalError
from splitter.core.lsn import lsn_to_str
from splitter.pipeline.sink import ApplySession
from splitter.pipeline.worker.state import Unit

#: unique_violation, exclusion_violation: refusals that may come from the order of writes alone.
ORDER_SENSITIVE = frozenset({"23505", "23P01"})


def order_sensitive(sqlstate: str | None) -> bool:
    """Whether a refusal may be the collapse's order of writes, not the data (worth applying again in order)."""
    return sqlstate in ORDER_SENSITIVE


def apply_in_source_order(sink: ApplySession, service: str, units: Sequence[Unit], mode: ApplyMode) -> Rejected | None:
    """Apply `units` into the open transaction one source transaction at a time, constraints deferred.

    None when all of them applied (the caller commits); else the refusal of a change that no order makes
    valid, with the open transaction left for the caller to roll back.
    """
    sink.defer_constraints("deferring the deferrable constraints of the service database")
    for commit_lsn, steps in by_transaction((change, relation) for _, change, relation in units):
        rejected = apply_transaction(sink, service, commit_lsn, steps, mode)
        if rejected is not None:
            return rejected
    return None


def apply_transaction(sink: ApplySession, service: str, commit_lsn: int, steps: Sequence[Step],
                      mode: ApplyMode) -> Rejected | None:
    """One source transaction's steps, in a savepoint; refused by a unique or exclusion constraint, the rows
    of the tables feeding the refusing table are written as delete-then-insert.  None when it applied;
    else the refusal that stands with every table involved replaced (only the transaction is undone).
    """
    what = f"applying the transaction with commit LSN {lsn_to_str(commit_lsn)} on its own"
    rejected = sink.apply_in_savepoint(steps, mode, what)
    replaced: frozenset[str] = frozenset()
    blockers: list[str] = []
    while rejected is not None and order_sensitive(rejected.sqlstate):
        found = sink.replacement(rejected.table, _tables(steps) - replaced, what)
        if not found.tables:
            break  # refused with every table it involves replaced: invalid in any order
        replaced |= found.tables
        blockers += found.blockers
        trial = replacing(steps, replaced)
        if trial is None:
            raise _unsafe(service, commit_lsn, rejected, False, [
                f"it updates rows of {', '.join(sorted(found.tables))} without their unchanged TOASTed columns, "
                f"which a delete would lose"])
        again = sink.apply_in_savepoint(trial, mode, what, keep=not blockers)
        if again is None and blockers:
            raise _unsafe(service, commit_lsn, rejected, True, blockers)
        rejected = again
    return rejected


def _tables(steps: Sequence[Step]) -> frozenset[str]:
    return frozenset(name for step in steps if isinstance(step, Segment) for name in step.tables)


def _unsafe(service: str, commit_lsn: int, rejected: Rejected, valid: bool, blockers: Sequence[str]) -> FatalError:
    constraint = rejected.constraint or "a unique or exclusion constraint"
    table = rejected.table or "the target"
    leaves = ("leaves rows it accepts" if valid else "may leave rows it accepts (splitter cannot tell)")
    return FatalError(
        f"service {service}: {constraint} on {table} refuses the source transaction with commit LSN "
        f"{lsn_to_str(commit_lsn)} (SQLSTATE {rejected.sqlstate}), which {leaves} but moves values between "
        f"rows (a swap, say) in a way no order of single-row writes follows: {constraint} is checked row by "
        f"row.  Splitter writes such a transaction as delete-then-insert, but cannot here: "
        f"{'; '.join(blockers)}.  Make {constraint} DEFERRABLE (a unique index cannot be deferred: replace it "
        f"with a UNIQUE constraint declared DEFERRABLE), or remove what stands in the way, and restart the "
        f"worker.  Database message: {rejected.message}")
