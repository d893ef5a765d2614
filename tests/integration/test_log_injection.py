"""SQL smuggled into the change log: a type name in a record's schema header that is really SQL; and every
type name a real server's `format_type` prints, which the same check must let through.

Anyone who can produce to `<source>.changes` writes the schema header workers render into their apply
statements (`s.<column>::<type>`).  The test produces whole transactions by hand (a row record whose header
gives an extra column an injected type, then its commit record, both made by the envelope's own encoders),
against a worker with `on_error = dead_letter` and then one with `stop`.  The injection calls
`nextval('canary')` on a sequence the test creates in the service database: `nextval` is not undone by a
rollback, so `canary.is_called` shows whether the SQL ran at all, even in a transaction that failed later.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import orjson
import psycopg
from confluent_kafka import Producer

from connectors.pg.source import relation_schema
from splitter.core import envelope
from splitter.core.envelope import ColumnSchema
from splitter.core.exit_codes import FATAL as EXIT_FATAL
from splitter.topology.type_names import type_name_problem
from tests.conftest import KafkaServer
from tests.integration.test_dead_letters import letters, one, wait_for
from tests.integration.test_replay import Pipeline, Stack, make_stack, pipelines, read_topic, subset

__all__ = ["pipelines"]  # the fixture, imported so pytest finds it here

# Rendered as `s."injected"::text, nextval('canary')::text AS "injected"`: a second, unused output column of
# the staged relation, which PostgreSQL still evaluates (volatile) for every staged row.
DEAD_LETTERED = "text, nextval('canary')::text"
# The first check the old code made: `SELECT NULL::<type>` parses, and its first target is a cast of a constant.
STOPPED = "int, (SELECT nextval('canary'))"


def _forge_transaction(stack: Stack, type_name: str, row_id: str) -> int:
    """Produce a one-row transaction into topics whose schema header gives column "injected" `type_name`;
    returns its commit LSN (just past the source's, so the worker has not passed it and later changes follow)."""
    settings = stack.settings
    with psycopg.connect(stack.source, autocommit=True) as conn:
        real = relation_schema(conn, "public", "topics")  # the header capture sends for the table
    relation = dataclasses.replace(real, columns=(*real.columns, ColumnSchema("injected", type_name, False)))
    lsn, xid = stack.source_lsn(), 2**31
    after = {"id": row_id, "name": "forged", "color": "#000", "post_count": "0",
             "created_at": "2024-01-01 00:00:00", "updated_at": "2024-01-01 00:00:00", "injected": None}
    key, value = envelope.encode_row(database="bento_social", relation=relation, op="c", before=None, after=after,
                                     unchanged_toast=(), commit_lsn=lsn, xid=xid, sequence=0, ts_ms=1, now_ms=1)
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    producer.produce(settings.topic, key=key, value=value,
                     headers=envelope.row_headers(relation.header_bytes(), relation.qualified, lsn))
    producer.produce(settings.topic, value=envelope.encode_commit(commit_lsn=lsn, end_lsn=lsn + 1, xid=xid, events=1,
                                                                  ts_ms=1, tables={relation.qualified: 1}),
                     headers=envelope.commit_headers(lsn))
    assert producer.flush(10) == 0
    return lsn


def _canary_called(dsn: str) -> bool:
    return bool(one(dsn, "SELECT is_called FROM public.canary"))


def test_an_injected_type_name_is_dead_lettered_or_stops_the_worker_and_never_runs(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], pipelines: list[Pipeline]) -> None:
    stack = make_stack(make_databases, kafka_server.bootstrap, unique_name, ["topic"], scale=5,
                       on_error={"topic": "dead_letter"})
    topic_db = stack.dsns["topic_db"]  # the superuser's: the worker runs as splitter's role, which may call it
    with psycopg.connect(topic_db, autocommit=True) as conn:
        conn.execute("CREATE SEQUENCE public.canary")
        conn.execute("GRANT ALL ON SEQUENCE public.canary TO PUBLIC")
    pipeline = Pipeline(stack.settings)
    pipelines.append(pipeline)
    pipeline.start_all()
    stack.wait_caught_up(pipeline=pipeline)

    # on_error = dead_letter: the record is set aside, and the changes after it still apply.
    _forge_transaction(stack, DEAD_LETTERED, "forged-1")
    stack.source_exec("INSERT INTO topics (id, name, color, created_at, updated_at) "
                      "VALUES ('after-forged', 'Later', '#abc', now(), now())")
    stack.wait_caught_up(pipeline=pipeline)
    assert one(topic_db, "SELECT name FROM topic.topics WHERE id = 'after-forged'") == "Later"
    assert not _canary_called(topic_db)
    assert one(topic_db, "SELECT count(*) FROM topic.topics WHERE id = 'forged-1'") == 0
    wait_for("the forged record to be dead-lettered", lambda: len(letters(topic_db, "topic")) == 1, pipeline=pipeline)
    (letter,) = letters(topic_db, "topic")
    assert DEAD_LETTERED in letter[5] and b"forged-1" in (letter[8] or b""), letter
    dlq = read_topic(stack.settings.kafka_bootstrap, f"{stack.settings.topic}.dlq.topic")
    assert len(dlq) == 1 and DEAD_LETTERED in orjson.loads(dlq[0][2] or b"{}")["error"], dlq
    assert pipeline.running("topic") and not pipeline.errors["topic"], pipeline.errors["topic"]

    # on_error = stop: the worker stops naming the type; nothing ran, nothing of the transaction was applied.
    pipeline.stop("topic")
    pipeline.start_worker("topic", stack.with_topology(subset(["topic"])))
    before = stack.checkpoint("topic")
    _forge_transaction(stack, STOPPED, "forged-2")
    assert pipeline.wait_exit("topic") == EXIT_FATAL
    message = str(pipeline.errors["topic"][-1])
    assert repr(STOPPED) in message and "on_error=stop" in message, message
    assert stack.checkpoint("topic") == before
    assert not _canary_called(topic_db)
    assert one(topic_db, "SELECT count(*) FROM topic.topics WHERE id = 'forged-2'") == 0


# Types with awkward names, in a schema outside the search path (so format_type qualifies them) and in public.
AWKWARD_TYPES = '''
CREATE SCHEMA "Odd Schema";
CREATE TYPE "Odd Schema"."Mood ""quoted""" AS ENUM ('a', 'b');
CREATE TYPE "Odd Schema"."Mixed Case" AS (x int, "Y y" text);
CREATE DOMAIN "Odd Schema"."with space" AS varchar(5);
CREATE TYPE "Odd Schema"."line
break" AS ENUM ('x');
CREATE TYPE public.mood AS ENUM ('happy');
CREATE TYPE public."select" AS ENUM ('s');
CREATE TYPE public."integer" AS (i int);
CREATE TYPE public."größe" AS ENUM ('g');
CREATE TYPE public."a.b" AS ENUM ('a');
CREATE TYPE public."semi;colon -- /*x*/" AS ENUM ('c');
CREATE TYPE public.ok_range AS RANGE (subtype = numeric);
CREATE DOMAIN public.positive AS numeric(10,2) CHECK (VALUE > 0);
CREATE TYPE public.%s AS ENUM ('long');
CREATE TABLE public.modifiers (
    a numeric(10,2), b numeric(5,-2), c varchar(10), d char(3), e bit(4), f varbit(7), g time(3), h timetz(2),
    i timestamp(0), j timestamptz(6), k interval year to month, l interval day to second(3), m interval(2),
    n interval hour, o interval minute to second(1), p numeric(10,2)[], q varchar(10)[][], r timestamp(3)[],
    s "Odd Schema"."Mood ""quoted"""[], t "Odd Schema"."with space", u public."select"[], v "char", w bpchar,
    x bit varying, y interval second(4), z character varying);
''' % ('"' + "L" * 63 + '"')


def test_every_type_name_format_type_prints_is_accepted(make_databases: Callable[..., dict[str, str]]) -> None:
    dsn = make_databases(names=("types",))["types"]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(AWKWARD_TYPES)  # type: ignore[arg-type]
        names = {r[0] for r in conn.execute(
            "SELECT format_type(oid, NULL) FROM pg_type UNION SELECT format_type(oid, -1) FROM pg_type "
            "UNION SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE atttypid <> 0")}
        user = {r[0] for r in conn.execute(
            "SELECT format_type(t.oid, NULL) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
            "WHERE n.nspname IN ('public', 'Odd Schema')")}
        modifiers = [r[0] for r in conn.execute(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = 'public.modifiers'::regclass AND attnum > 0 ORDER BY attnum")]
    # What the test created is among them, spelled as format_type spells it (quoted, qualified, arrays).
    assert {'"Odd Schema"."Mood ""quoted"""', '"Odd Schema"."Mood ""quoted"""[]', '"Odd Schema"."line\nbreak"',
            '"select"', '"integer"[]', '"größe"', '"a.b"', '"semi;colon -- /*x*/"', "ok_range", "ok_multirange",
            '"Odd Schema"."Mixed Case"[]', "positive"} <= user, sorted(user)
    assert modifiers[:2] == ["numeric(10,2)", "numeric(5,-2)"] and "interval day to second(3)" in modifiers
    assert len(names) > 600 and user <= names and set(modifiers) <= names
    assert {'"char"', "bpchar", '"bit"', '"any"', "character varying", "double precision[]", "integer[]",
            "timestamp(6) with time zone", "time(3) without time zone", "interval year to month"} <= names
    refused = {n: type_name_problem(n) for n in sorted(names) if type_name_problem(n) is not None}
    assert not refused, refused
