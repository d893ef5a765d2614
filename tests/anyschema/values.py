"""Edge values of every column of `all_types`, as SQL expressions the source evaluates.

Taken from PostgreSQL's documentation of each type's input syntax: limits, special values (NaN, infinities,
-0, subnormals), quoting hazards (quotes, commas, braces, backslashes, the word NULL), every plane of
Unicode and large values.  Row i of the table takes value i of each column and NULL where a column has
fewer values; one row is NULL throughout.  Must not: compute what the target should hold (the tests read
the source's own text forms for that).
"""

from __future__ import annotations

from collections.abc import Collection

_BYTES = "(SELECT decode(string_agg(lpad(to_hex(b), 2, '0'), '' ORDER BY b), 'hex') FROM generate_series(0, 255) b)"
_UNICODE = ("chr(1) || chr(127) || chr(128) || 'é' || 'e' || chr(769) || chr(65533) || chr(65279) || chr(66376)"
            " || chr(128512) || chr(131072) || chr(196608) || chr(917505) || chr(983040) || chr(1114109)"
            " || E'\\ttab\\nnewline\\rreturn\\\\backslash'")
# 10 MB that compresses only about half (md5 hex digits), so the source TOASTs it out of line.
_TEN_MB = "(SELECT string_agg(md5(g::text), '') FROM generate_series(1, 327680) g)"

VALUES: dict[str, list[str]] = {
    "c_numeric": ["0", "'-0.000'", "'123456789012345678901234567890.123456789012345678901234567890'",
                  "'NaN'", "'Infinity'", "'-Infinity'", "repeat('9', 1000)::numeric",
                  "('0.' || repeat('0', 999) || '1')::numeric", "'-1e-16383'"],
    "c_numeric_scaled": ["'12345678.1234'", "'-0.0001'", "'NaN'", "'0'", "'-99999999.9999'"],
    "c_real": ["'NaN'", "'Infinity'", "'-Infinity'", "'-0'", "'1.4e-45'", "'3.4028235e38'", "'1.1754944e-38'",
               "'0.1'"],
    "c_double": ["'NaN'", "'Infinity'", "'-Infinity'", "'-0'", "'4.9e-324'", "'1.7976931348623157e308'",
                 "'2.2250738585072014e-308'", "'0.1'"],
    "c_money": ["'-92233720368547758.08'", "'92233720368547758.07'", "'0'", "'1.5'"],
    "c_smallint": ["-32768", "32767", "0"],
    "c_integer": ["-2147483648", "2147483647", "0"],
    "c_bigint": ["-9223372036854775808", "9223372036854775807", "0"],
    "c_bit": ["B'10101010'", "B'00000000'", "B'11111111'"],
    "c_varbit": ["B''", "B'1'", "repeat('10', 500)::varbit"],
    "c_date": ["'infinity'", "'-infinity'", "'4713-01-01 BC'", "'5874897-12-31'", "'2000-02-29'", "'0001-01-01'"],
    "c_time": ["'24:00:00'", "'00:00:00'", "'23:59:59.999999'", "'12:34:56.5'"],
    "c_timetz": ["'24:00:00+15:59'", "'00:00:00-15:59'", "'12:00:00+05:30'", "'23:59:59.999999+00'"],
    "c_timestamp": ["'infinity'", "'-infinity'", "'4713-01-01 00:00:00 BC'", "'294276-12-31 23:59:59.999999'",
                    "'2000-01-01 00:00:00.000001'", "'1999-12-31 24:00:00'"],
    "c_timestamp3": ["'2026-12-03 10:11:12.345'", "'infinity'", "'0044-03-15 12:00:00 BC'"],
    "c_timestamptz": ["'infinity'", "'-infinity'", "'4713-01-01 00:00:00+00 BC'",
                      "'294276-12-31 23:59:59.999999+00'", "'2026-03-29 01:30:00 Europe/London'",
                      "'2026-11-01 01:30:00-04'", "'2000-01-01 00:00:00+14'", "'1900-01-01 00:00:00 Asia/Kolkata'"],
    "c_interval": ["'178000000 years'", "'-178000000 years'", "'1 day -1 second'", "'-1 mons +1 day'",
                   "'0.000001 seconds'", "'P1Y2M3DT4H5M6.5S'", "'-2147483648 days'"],
    "c_char": ["'ab'", "'      '", "'abcdef'", "'é'"],
    "c_varchar": ["''", "'x'", "repeat('é', 20)", "' trailing  '"],
    "c_text": ["''", _UNICODE, _TEN_MB, "'\\N'", "'NULL'", "E'a\\\\.b'", "repeat('🙂', 1000)"],
    "c_bytea": [_BYTES, "''::bytea", "'\\x00'::bytea", "decode(repeat('00ff', 50000), 'hex')"],
    "c_json": ["'{\"a\": 1, \"a\": 2}'", "'\"\\u00e9\\ud83d\\ude00\\u0000x\"'::json",
               "(repeat('[', 500) || repeat(']', 500))::json", "'  {\"spaced\" :  [1, 2.50, 1e100] }  '", "'null'"],
    "c_jsonb": ["'{\"a\": 1, \"a\": 2}'", "'\"\\u00e9\\ud83d\\ude00\"'",
                "(repeat('[', 500) || repeat(']', 500))::jsonb",
                "'{\"n\": 1.500, \"big\": 123456789012345678901234567890}'", "'null'", "'{}'"],
    "c_uuid": ["'00000000-0000-0000-0000-000000000000'", "'FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF'",
               "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'"],
    "c_inet": ["'10.0.0.1/8'", "'::ffff:1.2.3.4/128'", "'2001:db8::1'", "'0.0.0.0/0'"],
    "c_cidr": ["'10.0.0.0/8'", "'2001:db8::/32'", "'::/0'"],
    "c_macaddr": ["'08:00:2b:01:02:03'", "'ff:ff:ff:ff:ff:ff'"],
    "c_macaddr8": ["'08:00:2b:01:02:03:04:05'", "'08:00:2b:01:02:03'"],
    "c_point": ["'(1.5,-0)'", "'(NaN,Infinity)'", "'(1e-300,-1e300)'"],
    "c_line": ["'{1,-1,0}'", "'{0,1,-5.5}'"],
    "c_lseg": ["'[(0,0),(1,1)]'", "'[(-1e10,2),(3,-4)]'"],
    "c_box": ["'(1,1),(0,0)'", "'(0,0),(0,0)'"],
    "c_path": ["'[(0,0),(1,1),(2,0)]'", "'((0,0),(1,1),(2,0))'"],
    "c_polygon": ["'((0,0),(1,1),(2,0))'", "'((0,0))'"],
    "c_circle": ["'<(0,0),1>'", "'<(1.5,-2.5),1e-300>'"],
    "c_int4range": ["'empty'", "'(,)'", "'[1,5)'", "'(1,5]'", "'[-2147483648,2147483647)'"],
    "c_int8range": ["'empty'", "'[-9223372036854775808,9223372036854775807)'", "'(,0]'"],
    "c_numrange": ["'[1.5,NaN)'", "'(,)'", "'[-Infinity,Infinity]'", "'[0.1,0.10]'"],
    "c_tsrange": ["'[-infinity,infinity)'", "'[2000-01-01,2000-01-02)'", "'empty'"],
    "c_tstzrange": ["'[2000-01-01 00:00+00,infinity)'", "'(,)'", "'[\"2026-03-29 01:30 Europe/London\",)'"],
    "c_daterange": ["'[2000-01-01,2000-01-01]'", "'[4713-01-01 BC,infinity)'", "'empty'"],
    "c_int4multirange": ["'{}'", "'{[1,3), [5,7)}'", "'{(,)}'"],
    "c_int8multirange": ["'{[1,2), [2,3)}'", "'{}'"],
    "c_nummultirange": ["'{[1.5,2.5], (3,)}'", "'{}'"],
    "c_tsmultirange": ["'{[2000-01-01,2000-01-02), [2001-01-01,)}'"],
    "c_tstzmultirange": ["'{[2000-01-01 00:00+00,2000-01-02 00:00+05)}'"],
    "c_datemultirange": ["'{[2000-01-01,2000-02-01), [2001-01-01,infinity)}'", "'{}'"],
    "c_int_matrix": ["'{{1,2},{3,4}}'", "'{NULL,1,NULL}'", "'[0:1][-2:-2]={{1},{2}}'", "'{}'", "'{{NULL}}'"],
    "c_text_array": ["ARRAY['a\"b', 'c,d', '{e}', 'NULL', '', ' ', 'back\\slash', NULL]",
                     "'{\"\"}'", "'[5:6]={x,y}'", "ARRAY[E'new\\nline', 'é🙂']"],
    "c_mood_array": ["ARRAY['needs \"quotes\"', 'with space', 'a,b', '{brace}', 'NULL']::mood[]",
                     "'{}'::mood[]", "ARRAY[NULL, 'ok']::mood[]"],
    "c_pair_array": ["ARRAY[ROW(1, 'a,b', '2000-01-01 00:00+00'), ROW(NULL, NULL, NULL),"
                     " ROW(-1, '\"quoted\" (paren)', 'infinity')]::pair[]", "'{}'::pair[]"],
    "c_mood": ["'needs \"quotes\"'", "'with space'", "'a,b'", "'naïve'", "'{brace}'", "'NULL'", "'sad'"],
    "c_pair": ["ROW(1, 'a,b', '2000-01-01 00:00+00')::pair", "ROW(NULL, NULL, NULL)::pair",
               "ROW(0, '', '-infinity')::pair", "ROW(7, '\"q\" \\ (p)', NULL)::pair"],
    "c_positive": ["1", "2147483647"],
    "c_short_code": ["'ABC'", "'ZZZZZZZZ'"],
    "c_tsvector": ["'a fat cat:1,3A sat:2B'", "$$'quoted ''word''':1 \\\\back$$", "''"],
    "c_tsquery": ["'fat & (rat | cat:*)'", "'!a <-> b'"],
    "c_citext": ["'MiXeD'", "'é'"],
    "c_hstore": ["'a=>1, \"b c\"=>NULL, \"q\\\"\"=>\"v\\\\\"'", "''"],
    "c_ltree": ["'Top.Science.Astronomy'", "''"],
    "c_bool": ["true", "false"],
    "c_oid": ["0", "4294967295"],
    "c_pg_lsn": ["'0/0'", "'FFFFFFFF/FFFFFFFF'"],
}

#: Only on a server built with libxml (the embedded one is not: its xml type takes no value but NULL).
XML_VALUES = {"c_xml": ["'<a b=\"1\">x &amp; y</a>'", "'text<b/>more'", "'<?xml version=\"1.0\"?><r>é</r>'"]}

ROWS = max(len(v) for v in VALUES.values())


def insert_rows(first_id: int, with_xml: bool = False, leave_out: Collection[str] = ()) -> list[str]:
    """One INSERT per row (the 10 MB value stays in one statement), ids from `first_id`; the last is all NULL.
    `leave_out`: columns the table does not have (their type is missing on a server)."""
    statements = []
    values_of = {c: v for c, v in {**VALUES, **(XML_VALUES if with_xml else {})}.items() if c not in leave_out}
    columns = list(values_of)
    for i in range(ROWS + 1):
        values = [values_of[c][i] if i < len(values_of[c]) else "NULL" for c in columns]
        statements.append(f"INSERT INTO all_types (id, {', '.join(columns)}) "
                          f"VALUES ({first_id + i}, {', '.join(values)})")
    return statements
