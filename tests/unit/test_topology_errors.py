"""Topology mistakes are refused when topology.py loads, each named with what is wrong and where.

Each case writes a small topology file into tmp_path with one mistake, marked `# <- HERE` on the line
that declares the faulty object, and loads it with `load_topology` (no server needed).  Unknown source
tables and columns need the source's catalog: `splitter plan` reports them (tests/integration/test_plan.py);
here `sqlrender.check_route_against` is checked once on a hand-written relation.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from splitter import cli
from splitter.core.envelope import ColumnSchema
from splitter.core.errors import ConfigurationError
from splitter.topology.loading import load_topology
from splitter.topology.sqlrender import check_route_against

HEADER = "from splitter.topology import Service, Table, Topology\n\n"

# name -> (topology source, what the message must say)
CASES: dict[str, tuple[str, str]] = {
    "unknown key column": (
        """TOPOLOGY = Topology(
    source_database="src",
    services=(
        Service("user", database="user_db", tables=(
            Table("users", source="users", key=("uid",), columns={"id": "id", "name": "name"}),  # <- HERE
        )),
    ),
)
""", "user.users: key column 'uid' is not among its columns"),
    "expression that does not parse": (
        """TOPOLOGY = Topology(
    source_database="src",
    services=(
        Service("user", database="user_db", tables=(
            Table("users", source="users", key=("id",), columns={"id": "id", "name": "coalesce(name,"}),  # <- HERE
        )),
    ),
)
""", "user.users.name: expression 'coalesce(name,' does not parse"),
    "subquery": (
        """TOPOLOGY = Topology(
    source_database="src",
    services=(
        Service("user", database="user_db", tables=(
            Table("users", source="users", key=("id",), columns={
                "id": "id", "n": "(SELECT count(*) FROM followers)"}),  # <- HERE
        )),
    ),
)
""", "user.users.n: expression '(SELECT count(*) FROM followers)' contains a subquery"),
    # An expression's problem is reported at the expression's line, not at the line of its `Table(`.
    "expression that does not parse, on its own line": (
        """TOPOLOGY = Topology(
    source_database="src",
    services=(
        Service("user", database="user_db", tables=(
            Table(
                "users",
                source="users",
                key=("id",),
                columns={
                    "id": "id",
                    "name": "name",
                    "bio": "substr(bio, 1,",  # <- HERE
                    "nick": "lower(name)",
                },
            ),
        )),
    ),
)
""", "user.users.bio: expression 'substr(bio, 1,' does not parse"),
    "expression that does not parse, columns given by position": (
        """TOPOLOGY = Topology(
    source_database="src",
    services=(
        Service("user", database="user_db", tables=(
            Table("users", "users", ("id",), {
                "id": "id",
                "name": "name ||",  # <- HERE
            }),
        )),
    ),
)
""", "user.users.name: expression 'name ||' does not parse"),
    "two routes into one target table": (
        """TOPOLOGY = Topology(
    source_database="src",
    services=(
        Service("user", database="user_db", schema="users", tables=(
            Table("users", source="users", key=("id",), columns={"id": "id"}),
            Table("users.users", source="profiles", key=("id",), columns={"id": "id"}),  # <- HERE
        )),
    ),
)
""", "user.users.users: two routes write the same target table users.users"),
    "bad on_error": (
        """TOPOLOGY = Topology(
    source_database="src",
    services=(
        Service("user", database="user_db", on_error="ignore", tables=(  # <- HERE
            Table("users", source="users", key=("id",), columns={"id": "id"}),
        )),
    ),
)
""", "service 'user' has on_error='ignore'; choose one of stop, dead_letter"),
    "bad on_error of a table": (
        """TOPOLOGY = Topology(
    source_database="src",
    services=(
        Service("user", database="user_db", on_error="dead_letter", tables=(
            Table("users", source="users", key=("id",), columns={"id": "id"}),
            Table("followers", source="followers", key=("id",), columns={"id": "id"}, on_error="skip"),  # <- HERE
        )),
    ),
)
""", "user.followers: table 'followers' has on_error='skip'; choose one of stop, dead_letter, or leave it out to "
     "take the service's ('dead_letter')"),
}


# Two services take users (a: login, b: profile); each case breaks the Ownership one way.
_SHARED = """from splitter.topology.model import Ownership

A = Service("a", database="a_db", tables=(
    Table("users", source="users", key=("id",), columns={"id": "id", "name": "name", "bio": "bio"}),))
B = Service("b", database="b_db", tables=(
    Table("users", source="users", key=("id",), columns={@B_COLUMNS@}),@B_HERE@
))
TOPOLOGY = Topology(source_database="src", services=(A, B), shared=(
    Ownership("users", rows="a", columns=@OWNED@, reverse_defaults={@DEFAULTS@}),@O_HERE@
))
"""


def _shared(owned: str, *, b_columns: str = '"id": "id", "bio": "bio"', defaults: str = "",
            here: str = "ownership") -> str:
    marks = {"ownership": ("", "  # <- HERE"), "table": ("  # <- HERE", "")}[here]
    return (_SHARED.replace("@B_COLUMNS@", b_columns).replace("@OWNED@", owned).replace("@DEFAULTS@", defaults)
            .replace("@B_HERE@", marks[0]).replace("@O_HERE@", marks[1]))


CASES.update({
    "column with two owners": (_shared('{"a": ("name", "bio"), "b": ("bio",)}'),
                               "ownership of users: column 'bio' has two owners (a, b); give it to one"),
    "column without owner": (_shared('{"a": ("name",)}'),
                             "ownership of users: column 'bio' (read by a, b) has no owner"),
    "key declared for a service not owning the rows": (
        _shared('{"a": ("name",), "b": ("id", "bio")}'),
        "ownership of users: column 'id' is part of the key, which belongs to the row owner 'a', but is "
        "declared for b"),
    "owner reads its column only through a computed expression": (
        _shared('{"a": ("name",), "b": ("bio",)}', b_columns='"id": "id", "bio": "lower(bio)"'),
        "ownership of users: column 'bio' is owned by 'b', whose table users reads it only through a "
        "computed expression"),
    "owner does not read its column": (
        _shared('{"a": ("bio",), "b": ("name",)}'),
        "ownership of users: column 'name' is owned by 'b', whose table users does not read it"),
    "reverse default reading a column": (
        _shared('{"a": ("name",), "b": ("bio",)}', defaults='"nick": "lower(name)"'),
        "ownership of users: reverse default of 'nick' ('lower(name)') reads columns; it must be a constant"),
    "target column reading two owners' columns": (
        _shared('{"a": ("name",), "b": ("bio",)}', b_columns='"id": "id", "bio": "bio", "card": "name || bio"',
                here="table"),
        "b.users.card reads columns owned by 'b' (bio) and by others (name)"),
    "expression that is only DEFAULT": (
        """TOPOLOGY = Topology(
    source_database="src",
    services=(
        Service("user", database="user_db", tables=(
            Table("users", source="users", key=("id",), columns={"id": "id", "state": "DEFAULT"}),  # <- HERE
        )),
    ),
)
""", "user.users.state: expression 'DEFAULT' is only DEFAULT: leave the column out of the topology"),
    "row filter that does not parse": (
        """TOPOLOGY = Topology(
    source_database="src",
    services=(
        Service("post", database="post_db", tables=(
            Table("posts", source="posts", key=("id",), columns={"id": "id"}, where="status <>"),  # <- HERE
        )),
    ),
)
""", "post.posts: row filter (where=): expression 'status <>' does not parse"),
    "row filter that says DEFAULT": (
        """TOPOLOGY = Topology(
    source_database="src",
    services=(
        Service("post", database="post_db", tables=(
            Table("posts", source="posts", key=("id",), columns={"id": "id"},  # <- HERE
                  where="status = DEFAULT"),
        )),
    ),
)
""", "row filter (where=) 'status = DEFAULT' says DEFAULT, which only a target column has"),
    "row filter on the rows' owner": (
        """TOPOLOGY = Topology(
    source_database="src",
    services=(
        Service("post", database="post_db", tables=(
            Table("posts", source="posts", key=("id",), columns={"id": "id"}, where="status <> 'x'"),  # <- HERE
        )),
    ),
)
""", "post.public.posts has a row filter (\"status <> 'x'\") but owns the rows of public.posts"),
    "shared table without ownership": (
        """TOPOLOGY = Topology(source_database="src", services=(  # <- HERE
    Service("a", database="a_db", tables=(Table("users", source="users", key=("id",), columns={"id": "id"}),)),
    Service("b", database="b_db", tables=(Table("users", source="users", key=("id",), columns={"id": "id"}),)),
))
""", "source table public.users is taken by services a, b but no Ownership in `shared` says who owns"),
})


def _write(tmp_path: Path, name: str, body: str) -> tuple[Path, int]:
    path = tmp_path / f"{re.sub(r'[^a-z]+', '_', name)}.py"
    text = HEADER + body
    path.write_text(text)
    line = next(i for i, t in enumerate(text.splitlines(), start=1) if "# <- HERE" in t)
    return path, line


def _load_error(path: Path) -> str:
    with pytest.raises(ConfigurationError) as info:
        load_topology(path)
    return str(info.value)


@pytest.mark.parametrize("case", CASES)
def test_mistake_is_refused_at_load_naming_it(tmp_path: Path, case: str) -> None:
    body, needle = CASES[case]
    path, _ = _write(tmp_path, case, body)
    message = _load_error(path)
    assert message.startswith("topology is invalid:\n"), message
    problems = message.splitlines()[1:]
    assert len(problems) == 1, message
    # Every problem starts with the place it was declared ("<file>:<line>: "), then says what is wrong.
    assert re.match(r"  \S+:\d+: ", problems[0]), problems[0]
    assert needle in problems[0], problems[0]


@pytest.mark.parametrize("case", CASES)
def test_mistake_names_the_file_and_line_that_declared_it(tmp_path: Path, case: str) -> None:
    body, _ = CASES[case]
    path, line = _write(tmp_path, case, body)
    problem = _load_error(path).splitlines()[1]
    assert problem.startswith(f"  {path}:{line}: "), (problem, f"{path}:{line}")


def test_every_problem_is_listed_not_only_the_first(tmp_path: Path) -> None:
    path, _ = _write(tmp_path, "several", """TOPOLOGY = Topology(
    source_database="src",
    services=(
        Service("a", database="a_db", on_error="retry", tables=(
            Table("t", source="t", key=("k",), columns={"id": "id + "}),  # <- HERE
        )),
        Service("a", database="a_db", tables=(Table("t", source="t", key=("id",), columns={"id": "id"}),)),
    ),
)
""")
    message = _load_error(path)
    for needle in ("on_error='retry'", "key column 'k' is not among its columns", "'id + ' does not parse",
                   "service 'a' is declared twice", "uses database 'a_db', already used by service 'a'"):
        assert needle in message, message
    assert len(message.splitlines()) == 6, message


def test_file_that_cannot_run_or_lacks_topology_is_refused(tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text(HEADER + "TOPOLOGY = Topology(source_database='src', services=(Service('a'),))\n")
    message = _load_error(broken)
    assert str(broken) in message and "cannot load topology: TypeError" in message, message
    empty = tmp_path / "empty.py"
    empty.write_text("X = 1\n")
    assert "must define TOPOLOGY = Topology(...)" in _load_error(empty)
    assert "does not exist" in _load_error(tmp_path / "missing.py")


def test_cli_reports_a_bad_topology_in_one_message_without_a_traceback(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    body, needle = CASES["subquery"]
    path, _ = _write(tmp_path, "cli", body)
    # plan would connect next: the topology is refused before any connection is tried.
    code = cli.main(["plan", "--topology", str(path), "--source-dsn", "postgresql://u:Secret-9@127.0.0.1:9/src",
                     "--kafka", "127.0.0.1:9"])
    out, err = capsys.readouterr()
    assert code == 2
    assert err.startswith("splitter: configuration error: topology is invalid:") and needle in err, err
    assert "Traceback" not in err and "Secret-9" not in out + err


def test_unknown_source_column_is_named_by_check_route_against(tmp_path: Path) -> None:
    path, _ = _write(tmp_path, "route", """TOPOLOGY = Topology(
    source_database="src",
    services=(
        Service("user", database="user_db", tables=(
            Table("users", source="users", key=("id",), columns={"id": "id", "nick": "lower(nickname)"}),  # <- HERE
        )),
    ),
)
""")
    route = next(load_topology(path).routes())
    columns = {"id": ColumnSchema("id", "text", True), "name": ColumnSchema("name", "text", False)}
    problems = check_route_against(route, columns)
    assert len(problems) == 1, problems
    assert "expression 'lower(nickname)' reads column(s) nickname that public.users lacks" in problems[0]
    assert "public.users → user.public.users.nick" in problems[0]
    assert check_route_against(route, {**columns, "nickname": ColumnSchema("nickname", "text", False)}) == []
    # A key that reads a column outside the source primary key is refused too.
    unkeyed = {**columns, "id": ColumnSchema("id", "text", False), "nickname": ColumnSchema("nickname", "text", False)}
    assert any("not in the source row key" in p for p in check_route_against(route, unkeyed))
