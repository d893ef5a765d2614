-- The service databases' side of streaming.sql.
CREATE TABLE trunc_a (id integer PRIMARY KEY, v text);
CREATE TABLE trunc_b (id integer PRIMARY KEY, a_id integer REFERENCES trunc_a, v text);
CREATE TABLE trunc_c (id integer PRIMARY KEY, v text);

-- Not partitioned in the service.
CREATE TABLE events (region text NOT NULL, id bigint NOT NULL, payload text, PRIMARY KEY (id, region));

CREATE TABLE ri_default (id integer PRIMARY KEY, v text, n numeric, big text);
CREATE TABLE ri_full (id integer PRIMARY KEY, v text, n numeric, big text);

-- The subscriber's own shape: an identity column of its own (not the key), the mapped columns in another
-- order, and columns the topology does not know, with defaults (and one without).
CREATE TABLE subscribed (
    local_id bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    qty integer,
    status text NOT NULL DEFAULT 'new',
    id bigint PRIMARY KEY,
    seen_at timestamptz NOT NULL DEFAULT '2000-01-01 00:00:00+00',
    big text,
    counter integer DEFAULT 7,
    name text,
    note text
);
