"""Type names and column names as the change log carries them, checked before they come near SQL.

Owns: the grammar of a type name as PostgreSQL's `format_type()` prints it (what capture puts in a record's
schema header, and what the catalogs give), and what a column name must be to name a column at all.
Workers render a header's types into their statements as SQL text, and anyone who can produce to the
topic writes that header, so the grammar admits only what `format_type` can print: an optionally
schema-qualified name (plain words, or double-quoted with `""` escapes, at most 63 bytes each), the
multi-word built-ins (`double precision`, `character varying(n)`, `time(p) with time zone`,
`interval day to second(p)`, ...), integer type modifiers, and `[]` / `[n]` array suffixes.  Single spaces
only between the words of a built-in; no commas outside modifiers, no operators, comments, semicolons,
casts or keywords elsewhere.  What the grammar accepts is then parsed as `SELECT NULL::<type>` by
PostgreSQL's own parser (pglast) and must be exactly that: a second, independent reading, which also
refuses the single words that are not type names (reserved keywords).
Must not: compose SQL, ask a database, or import drivers.
"""

from __future__ import annotations

import functools
import re

import pglast
from pglast import ast, enums
from pglast.keywords import RESERVED_KEYWORDS

# NAMEDATALEN - 1: PostgreSQL truncates longer identifiers, so format_type never prints one.
MAX_IDENTIFIER_BYTES = 63
# Two quoted 63-byte names of doubled quotes, modifiers and array suffixes fit with room to spare.
MAX_TYPE_NAME_CHARS = 400

_WORD = r"[a-z_][a-z0-9_]*"
_QUOTED = r'"(?:[^"\x00]|"")+"'
_NAME = rf"(?:{_WORD}|{_QUOTED})"
_SIZE = r"\([0-9]{1,10}\)"
_MODIFIERS = r"\(-?[0-9]{1,10}(?:,-?[0-9]{1,10}){0,7}\)"  # numeric(5,-2) is legal from PostgreSQL 15
_SECOND = rf"second(?:{_SIZE})?"
_INTERVAL_FIELDS = (rf"(?:year|month|day|hour|minute|year to month|day to hour|day to minute|hour to minute"
                    rf"|(?:(?:day|hour|minute) to )?{_SECOND})")
_MULTI_WORD = (rf"double precision"
               rf"|(?:character|char|bit) varying(?:{_SIZE})?"
               rf"|(?:time|timestamp)(?:{_SIZE})? with(?:out)? time zone"
               rf"|interval {_INTERVAL_FIELDS}")
_TYPE = re.compile(rf"(?:{_MULTI_WORD}|(?:(?P<schema>{_NAME})\.)?(?P<name>{_NAME})(?:{_MODIFIERS})?)"
                   rf"(?:\[[0-9]{{0,10}}\]){{0,6}}")

# Every clause of a SelectStmt but its target list (its flags and enums are checked by value).
_SELECT_CLAUSES = ("distinctClause", "fromClause", "groupClause", "havingClause", "intoClause", "larg", "limitCount",
                   "limitOffset", "lockingClause", "rarg", "sortClause", "valuesLists", "whereClause", "windowClause",
                   "withClause")


def type_name_problem(type_name: str) -> str | None:
    """Why `type_name` is not a type name as `format_type` prints it; None when it is one."""
    if len(type_name) > MAX_TYPE_NAME_CHARS:
        return f"{len(type_name)} characters, longer than any type name"
    match = _TYPE.fullmatch(type_name)
    if match is None:
        return "not a type name as PostgreSQL's format_type prints one"
    for part in (match["schema"], match["name"]):
        if part is None:
            continue
        if part.startswith('"'):
            if len(part[1:-1].replace('""', '"').encode()) > MAX_IDENTIFIER_BYTES:
                return f"a quoted name longer than {MAX_IDENTIFIER_BYTES} bytes"
        elif part in RESERVED_KEYWORDS:
            return f"{part!r} is a reserved word, not a type name"
    if not _parses_as_one_type(type_name):
        return "PostgreSQL's parser does not read it as exactly one type name"
    return None


@functools.lru_cache(maxsize=1024)
def _parses_as_one_type(type_name: str) -> bool:
    """Whether `SELECT NULL::<type_name>` is exactly that statement: one target, a cast of NULL, nothing else."""
    try:
        statements = pglast.parse_sql(f"SELECT NULL::{type_name}")
    except pglast.parser.ParseError:
        return False
    if len(statements) != 1 or not isinstance(select := statements[0].stmt, ast.SelectStmt):
        return False
    if (select.op != enums.SetOperation.SETOP_NONE or select.all or select.groupDistinct
            or select.limitOption != enums.LimitOption.LIMIT_OPTION_DEFAULT
            or any(getattr(select, clause, None) for clause in _SELECT_CLAUSES)):
        return False
    targets = select.targetList or ()
    if len(targets) != 1 or targets[0].name is not None or targets[0].indirection:
        return False
    cast = targets[0].val
    return (isinstance(cast, ast.TypeCast) and isinstance(cast.arg, ast.A_Const) and bool(cast.arg.isnull)
            and isinstance(cast.typeName, ast.TypeName) and not cast.typeName.setof and not cast.typeName.pct_type)


def column_name_problem(name: str) -> str | None:
    """Why `name` cannot be a column's name (it is quoted as an identifier wherever it is used); None if it can."""
    if not name:
        return "an empty column name"
    if "\x00" in name:
        return "a column name with a NUL character"
    if len(name.encode()) > MAX_IDENTIFIER_BYTES:
        return f"a column name longer than {MAX_IDENTIFIER_BYTES} bytes"
    return None


def shown(text: str, limit: int = 120) -> str:
    """`text` for an error message: its repr, cut short (a refused name may be kilobytes of anything)."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"
