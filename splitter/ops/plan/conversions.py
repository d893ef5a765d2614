"""What storing an expression's result in a target column's type can lose or reject: the conversion rules.

Owns: `conversion_findings`, a pure judgement of one (expression, source result type, target type)
over the source table's facts: enum labels the target lacks, narrowed strings, integers, numerics,
floats and fractional seconds, time zones and dropped times of day; and `length_at_risk`, the one
rule for a string that may not fit (the plan's data checks count the rows that do not).
Must not: read a database or judge types with no conversion at all: the target database's own
planning of the apply statement reports those (see `gather`).
"""

from __future__ import annotations

from connectors.pg.inspect import TableFacts, TypeInfo
from splitter.ops.plan.facts import ERROR, INFO, WARNING
from splitter.topology.expressions import plain_column, possible_values, truncated_precision

_INT_RANK = {"int2": 2, "int4": 4, "int8": 8}
_INT_DIGITS = {"int2": 5, "int4": 10, "int8": 19}
_FLOATS = {"float4", "float8"}
_STRINGS = {"text", "varchar", "bpchar", "name"}
_PRECISION_TYPES = {"timestamp", "timestamptz", "time", "timetz"}
_TIMESTAMPS = {"timestamp", "timestamptz"}


def _numeric_modifier(typmod: int) -> tuple[int, int] | None:
    """(precision, scale) of numeric(p, s), or None for an unconstrained numeric."""
    if typmod < 4:
        return None
    raw = typmod - 4
    # The scale is an 11-bit signed field since PostgreSQL 15 (negative scales round left of the point).
    return (raw >> 16) & 0xFFFF, ((raw & 0x7FF) ^ 1024) - 1024


def _string_length(t: TypeInfo) -> int | None:
    """Maximum characters a string type holds, None if unbounded."""
    if t.name == "name":
        return 63
    if t.name in ("varchar", "bpchar") and t.typmod >= 4:
        return t.typmod - 4
    return None


def length_at_risk(expr: str, result: TypeInfo, target: TypeInfo, source: TableFacts) -> int | None:
    """The length limit of string type `target` that `expr`'s string `result` may exceed, else None."""
    limit = _string_length(target)
    have = _string_length(result) if result.name in _STRINGS else None
    if limit is None or (have is not None and have <= limit):
        return None
    values = possible_values(expr, source)
    if values is not None and max((len(v) for v in values), default=0) <= limit:
        return None
    return limit


def _time_precision(t: TypeInfo) -> int:
    return 6 if t.typmod < 0 else t.typmod


def conversion_findings(expr: str, result: TypeInfo, target: TypeInfo,
                        source: TableFacts) -> list[tuple[str, str, str]]:
    """(severity, code, message) for each way storing `expr`'s `result` in `target` can lose or reject data.

    Types with no conversion at all are not judged here: the target database's own planning of the
    apply statement reports them (see `gather.gather_target`).
    """
    out: list[tuple[str, str, str]] = []
    s, t = result, target
    arrow = f"{s.display} → {t.display}"

    if t.enum_labels is not None:
        values = possible_values(expr, source)
        column = plain_column(expr)
        if values is not None:
            missing = sorted(values - set(t.enum_labels))
            if missing:
                src = (f"source column {column} ({source.columns[column].type.display})"
                       if column and column in source.columns else "the expression")
                out.append((ERROR, "enum-label-missing",
                            f"{src} can hold {', '.join(repr(v) for v in missing)}, which enum {t.display} lacks "
                            f"(its labels: {', '.join(t.enum_labels)}); rows with them would be rejected"))
        elif column is not None and s.category == "S":
            out.append((WARNING, "enum-from-text",
                        f"{arrow}: source column {column} is free text; a value that is not a label of {t.display} "
                        f"({', '.join(t.enum_labels)}) is rejected"))
        return out

    if t.name in _STRINGS and s.category in ("S", "E"):
        limit = length_at_risk(expr, s, t, source)
        if limit is not None:
            out.append((WARNING, "varchar-narrowed", f"{arrow}: values longer than {limit} characters are rejected"))
        return out

    if t.name in _INT_RANK:
        if s.name in _INT_RANK and _INT_RANK[t.name] < _INT_RANK[s.name]:
            out.append((WARNING, "integer-narrowed", f"{arrow}: values outside the range of {t.display} are rejected"))
        elif s.name == "numeric" or s.name in _FLOATS:
            out.append((WARNING, "fraction-rounded",
                        f"{arrow}: fractions are rounded and values outside the range of {t.display} rejected"))
        return out

    if t.name == "numeric":
        tmod = _numeric_modifier(t.typmod)
        if tmod is None:
            return out
        t_int = tmod[0] - tmod[1]
        if s.name in _INT_DIGITS:
            if t_int < _INT_DIGITS[s.name]:
                out.append((WARNING, "numeric-narrowed", f"{arrow}: values with more than {t_int} integer digits "
                                                         f"are rejected"))
        elif s.name == "numeric":
            smod = _numeric_modifier(s.typmod)
            if smod is None:
                out.append((WARNING, "numeric-narrowed", f"{arrow}: values are rounded to {tmod[1]} decimal "
                                                         f"places and rejected beyond {t_int} integer digits"))
            else:
                if smod[1] > tmod[1]:
                    out.append((WARNING, "numeric-narrowed", f"{arrow}: scale {smod[1]} → {tmod[1]} rounds"))
                if smod[0] - smod[1] > t_int:
                    out.append((WARNING, "numeric-narrowed",
                                f"{arrow}: values with more than {t_int} integer digits are rejected"))
        elif s.name in _FLOATS:
            out.append((WARNING, "numeric-narrowed", f"{arrow}: floating-point values are rounded to "
                                                     f"{tmod[1]} decimal places"))
        return out

    if t.name in _FLOATS:
        if (s.name == "float8" and t.name == "float4") or s.name == "numeric" or (
                s.name == "int8" or (s.name == "int4" and t.name == "float4")):
            out.append((WARNING, "float-precision", f"{arrow}: {t.display} keeps fewer significant digits"))
        return out

    if t.name in _PRECISION_TYPES and s.name in _PRECISION_TYPES:
        if (s.name in _TIMESTAMPS) != (t.name in _TIMESTAMPS):
            return out  # time ↔ timestamp: the target's planning decides whether a conversion exists
        if s.name != t.name and {s.name, t.name} == _TIMESTAMPS:
            out.append((WARNING, "timezone-conversion",
                        f"{arrow}: converted in UTC (every session splitter opens has TimeZone "
                        f"UTC; write the conversion with AT TIME ZONE for another zone)"))
        have, keep = _time_precision(s), _time_precision(t)
        if keep < have:
            truncated = truncated_precision(expr)
            if truncated is not None and truncated <= keep:
                out.append((INFO, "precision-truncated",
                            f"{arrow}: the expression truncates to {keep} fractional digits explicitly"))
            else:
                out.append((WARNING, "precision-narrowed",
                            f"{arrow}: fractional seconds beyond {keep} digits are rounded, not truncated "
                            f"(write date_trunc(...) to truncate, or accept the rounding)"))
        return out

    if t.name == "date" and s.name in _TIMESTAMPS:
        out.append((WARNING, "time-dropped", f"{arrow}: the time of day is dropped"))
        return out

    if s.oid == t.oid and t.typmod >= 0 and (s.typmod < 0 or s.typmod > t.typmod):
        out.append((WARNING, "type-narrowed", f"{arrow}: the target's type modifier is narrower"))
    return out


__all__ = ["conversion_findings", "length_at_risk"]
