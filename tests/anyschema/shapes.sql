-- Table shapes of the any-schema tests (the source; shapes_target.sql is the service databases' side).
CREATE SCHEMA "Odd ""Schema""";
CREATE TABLE "Odd ""Schema"""."Mixed Case ""T""" (
    "select" integer PRIMARY KEY,
    "Col With Space" text,
    "quo""te" text,
    "UPPER" integer
);

-- Published through the root: rows move between partitions when their region changes.
CREATE TABLE events (region text NOT NULL, id bigint NOT NULL, payload text, PRIMARY KEY (id, region))
    PARTITION BY LIST (region);
CREATE TABLE events_eu PARTITION OF events FOR VALUES IN ('eu');
CREATE TABLE events_us PARTITION OF events FOR VALUES IN ('us');
CREATE TABLE events_other PARTITION OF events DEFAULT;

CREATE TABLE items (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    price numeric(10, 2) NOT NULL,
    qty integer NOT NULL,
    total numeric GENERATED ALWAYS AS (price * qty) STORED
);

-- No primary key: the replica identity is a unique index of NOT NULL columns, the row key.
CREATE TABLE coded (id bigint NOT NULL, code text NOT NULL, note text);
CREATE UNIQUE INDEX coded_code ON coded (code);
ALTER TABLE coded REPLICA IDENTITY USING INDEX coded_code;

DO $$ BEGIN
    EXECUTE 'CREATE TABLE wide (id bigint PRIMARY KEY, '
        || (SELECT string_agg(format('c%s integer', g), ', ' ORDER BY g) FROM generate_series(1, 999) g) || ')';
END $$;
