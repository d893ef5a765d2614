-- The service databases' side of shapes.sql: the same tables, each service in a schema of its own name.
CREATE SCHEMA "Target ""Schema""";
CREATE TABLE "Target ""Schema"""."Mixed Case ""T""" (
    "select" integer PRIMARY KEY,
    "Col With Space" text,
    "quo""te" text,
    "UPPER" integer
);

-- Not partitioned in the service: the rows of every partition land in one table.
CREATE TABLE events (region text NOT NULL, id bigint NOT NULL, payload text, PRIMARY KEY (id, region));

-- The service keeps the identity GENERATED ALWAYS and computes `total` itself.
CREATE TABLE items (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    price numeric(10, 2) NOT NULL,
    qty integer NOT NULL,
    total numeric GENERATED ALWAYS AS (price * qty) STORED
);

CREATE TABLE coded (id bigint NOT NULL, code text NOT NULL PRIMARY KEY, note text);

DO $$ BEGIN
    EXECUTE 'CREATE TABLE wide (id bigint PRIMARY KEY, '
        || (SELECT string_agg(format('c%s integer', g), ', ' ORDER BY g) FROM generate_series(1, 999) g) || ')';
END $$;
