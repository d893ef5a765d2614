-- Tables of the any-schema tests whose source schema changes while streaming (run as-is in the source and in
-- each service database): one table per service, so that one service stopping leaves the others streaming.

-- ALTER COLUMN ... TYPE of columns the topology reads: integer -> bigint, and varchar(10) -> text.
CREATE TABLE widened_int (id integer PRIMARY KEY, n integer, note text);
CREATE TABLE widened_text (id integer PRIMARY KEY, label varchar(10), note text);

-- Columns added (with and without a default, a volatile one rewriting the table), a column the topology does
-- not read changing type and then dropped.
CREATE TABLE grown (id integer PRIMARY KEY, v text, unread integer);

-- A column the topology reads, dropped.
CREATE TABLE shrunk (id integer PRIMARY KEY, kept text, gone text);
