"""Which change log capture streams into: starting a new one, and noticing that the broker lost it.

A slot position means "every record before it is in the log".  A broker that restarts empty (a memory-only
broker, a cluster rebuilt) or a topic deleted and created again takes that log away while the slot keeps
its position, and a capture that just created the topic again would stream into an empty log as if nothing
happened.  So capture gives every log an identity it can check: before it creates a slot it writes a
log-start marker (a non-transactional `splitter.log_start` record, before anything is confirmed, so a log
that a slot streamed into is never empty) and records the topic's id (Kafka's, new for every creation of a
topic) for the slot in the source.  On every later start it compares: a topic with another id, or an empty
one while the slot exists, is a lost log.

Owns: the marker (its prefix, writing it, reading its position back: the worker's log guard reads it too),
`open_log` (called once per start of capture, before the slot is found or created) and the error that stops
capture on a lost log.
Must not: run the stream, or decide anything about workers (each checks its own position: worker.log_guard).
"""

from __future__ import annotations

import logging
import time
from typing import Final

import orjson

from connectors.kafka.admin import TopicProbe
from connectors.kafka.log_reader import LogReader
from connectors.kafka.producer import ChangeLogProducer
from connectors.pg.client import Connection
from connectors.pg.positions import current_wal_lsn, slot_info
from connectors.pg.state.log_identity import SLOT, read_log_identity, write_log_identity
from splitter.core import envelope
from splitter.core.errors import FatalError, MalformedMessageError, RetryableError
from splitter.core.lsn import lsn_to_str, str_to_lsn
from splitter.pipeline.config import Settings

log = logging.getLogger(__name__)

#: The log-start marker's prefix (a capture record, not a logical message from the WAL).
LOG_START: Final = "splitter.log_start"


def marker_position(value: bytes | None) -> int | None:
    """The slot position a log-start marker says its log streams from; None for any other record."""
    try:
        message = envelope.decode_message(value)
        if message.prefix != LOG_START:
            return None
        return str_to_lsn(str(orjson.loads(message.content)["position"]))
    except (MalformedMessageError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def _write_marker(settings: Settings, producer: ChangeLogProducer, position: int, restarted: bool) -> None:
    """The log holds every commit from slot position `position` on: its records' LSN are >= it."""
    content = orjson.dumps({"slot": settings.slot, "position": lsn_to_str(position), "restarted": restarted}).decode()
    # As for any non-transactional record, its LSN covers the commits strictly before the position.
    lsn = max(position - 1, 0)
    value = envelope.encode_message(lsn=lsn, prefix=LOG_START, content=content, transactional=False,
                                    ts_ms=int(time.time() * 1000))
    producer.produce(b"", value, envelope.message_headers(lsn))
    if not producer.flush(30.0):
        raise RetryableError(f"the broker did not acknowledge the log-start marker of topic {settings.topic!r}")


def _topic_id(settings: Settings) -> str:
    found = TopicProbe(settings.kafka_bootstrap, settings.topic, settings.kafka_client("admin")).topic_id()
    if found is None:
        raise RetryableError(f"topic {settings.topic!r} disappeared while capture was starting")
    return found


def open_log(settings: Settings, catalog: Connection, producer: ChangeLogProducer) -> None:
    """Before the slot is found or created: start a log for a new slot, or check the existing slot's log."""
    info = slot_info(catalog, settings.slot)
    if info is not None:
        _check_log(settings, catalog, producer, info.confirmed_flush_lsn or 0)
        return
    # The slot about to be created streams from its consistent point, which is at or after this position.
    _write_marker(settings, producer, current_wal_lsn(catalog), restarted=False)
    write_log_identity(catalog, SLOT, settings.slot, settings.topic, _topic_id(settings))


def _check_log(settings: Settings, catalog: Connection, producer: ChangeLogProducer, confirmed: int) -> None:
    """The slot exists and has confirmed up to `confirmed`: refuse a topic that is not the log it streamed into.

    On a lost log, starts the new one (a marker saying it streams from `confirmed`, and its id recorded), so
    the next start streams into it, and stops with a FatalError saying what was lost and what comes next.
    """
    current = _topic_id(settings)
    stored = read_log_identity(catalog, SLOT, settings.slot)
    with LogReader(settings.kafka_bootstrap, settings.topic, config=settings.kafka_client("consumer")) as reader:
        _low, high = reader.watermarks()
    why: str | None = None
    if stored is not None and stored.topic != settings.topic:
        why = (f"slot {settings.slot!r} streamed into topic {stored.topic!r} (recorded {stored.since:%Y-%m-%d %H:%M}), "
               f"not {settings.topic!r}")
    elif stored is not None and stored.topic_id and current and stored.topic_id != current:
        why = (f"topic {settings.topic!r} has id {current}, but the log slot {settings.slot!r} streamed into had "
               f"id {stored.topic_id} (recorded {stored.since:%Y-%m-%d %H:%M}): the topic was created again")
    elif high == 0 and stored is not None:
        # A slot's log is never empty: its log-start marker is written before the slot confirms anything.
        why = f"topic {settings.topic!r} holds no record at all, but slot {settings.slot!r} streamed into it"
    elif high == 0:
        # A slot made by someone else (the cutover makes the reverse stream's): its log starts now.
        _write_marker(settings, producer, confirmed, restarted=False)
    if why is None:
        if stored is None or stored.topic_id != current:
            write_log_identity(catalog, SLOT, settings.slot, settings.topic, current)  # logs from older versions
        return
    log.error("the change log restarted behind slot %s: %s", settings.slot, why)
    _write_marker(settings, producer, confirmed, restarted=True)
    write_log_identity(catalog, SLOT, settings.slot, settings.topic, current)
    at = _last_marker(settings)
    raise FatalError(
        f"the change log restarted behind slot {settings.slot!r}: {why}. The broker lost the log (it restarted "
        f"empty, or the topic was deleted and created again); the slot has confirmed up to "
        f"{lsn_to_str(confirmed)}, so the changes up to there that a service had not applied yet are gone from the "
        f"log. Capture stops instead of streaming into the new log as if nothing happened; it has started the new "
        f"log (a log-start marker at offset {at if at is not None else '?'}, for slot position "
        f"{lsn_to_str(confirmed)}) and streams into it when started again. Each worker then stops with a lost-log "
        f"error; recover each service S with `splitter replay --service S --from-offset "
        f"{at if at is not None else '<the marker offset>'} --accept-gap --yes` (the worker performs it when it "
        f"starts), then `splitter backfill --service S --table T` for each of its tables")


def _last_marker(settings: Settings) -> int | None:
    """The offset of the newest log-start marker in a log that is seconds old (what a stray producer wrote
    into it before capture noticed comes before it)."""
    found = None
    try:
        with LogReader(settings.kafka_bootstrap, settings.topic, config=settings.kafka_client("consumer")) as reader:
            for point, value in reader.records(None, timeout=2.0, limit=1_000_000):
                if point.kind == envelope.KIND_MESSAGE and marker_position(value) is not None:
                    found = point.offset
    except RetryableError as exc:
        log.warning("could not find the log-start marker just written: %s", exc)
    return found
