"""Operator requests a worker serves in its own session: replay, and dlq retry or drop.

Operator commands (`splitter replay`, `splitter dlq`) write a request row; the worker, the only writer
of its service database, performs it.  Owns: the checkpoint a replay rewinds to, and the dead-letter
retry policy: letters are applied again in their order, each in its own savepoint; one still rejected
(or unreadable) keeps every later letter of the same row behind it, so a row's changes never apply out
of order.  Must not: move the read position (the loop rewinds), or flush a batch (the loop does first).
"""

from __future__ import annotations

from collections.abc import Sequence

from connectors.pg.sink_values import ApplyMode, Resolution
from connectors.pg.state.dead_letters import Request, StoredDeadLetter
from connectors.pg.state.schema import Checkpoint
from splitter.core.lsn import str_to_lsn
from splitter.pipeline.sink import ApplySession, RequestSession, Sink, can_apply_again, stored_change


def replay(sink: RequestSession, request: Request, topic: str) -> Checkpoint:
    """Move the checkpoint back to just before the request's offset and close it; the new checkpoint."""
    assert request.from_offset is not None and request.from_lsn is not None
    cp = Checkpoint(topic, 0, request.from_offset - 1, str_to_lsn(request.from_lsn), None)
    sink.rewind_to(request, cp)
    return cp


def resolve_dead_letters(sink: Sink, request: Request, mode: ApplyMode) -> str:
    """dlq retry (apply in order; those still rejected stay open) or dlq drop, in one transaction."""

    def decide(letters: Sequence[StoredDeadLetter]) -> Resolution:
        if request.action == "dlq_drop":
            return Resolution([d.id for d in letters], "dropped", f"dropped {len(letters)} dead letter(s)")
        done = _retry(sink, letters, mode)
        return Resolution(done, "retried", f"retried {len(letters)}: {len(done)} applied, "
                                           f"{len(letters) - len(done)} still rejected")

    return sink.resolve_dead_letters(request, decide)


def _retry(sink: ApplySession, letters: Sequence[StoredDeadLetter], mode: ApplyMode) -> list[int]:
    """Apply the letters again in order; the ids of those applied."""
    done: list[int] = []
    blocked: set[tuple[str | None, tuple[str | None, ...]]] = set()
    for letter in letters:
        key = (letter.source_table, tuple(letter.source_key or ()))
        if not can_apply_again(letter) or key in blocked:
            blocked.add(key)
            continue
        change, relation = stored_change(letter)
        if sink.apply_one(change, relation, mode, "dead-letter request") is None:
            done.append(letter.id)
        else:
            blocked.add(key)  # keep this row's later changes behind it, in order
    return done
