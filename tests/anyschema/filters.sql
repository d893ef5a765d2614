-- The source of the row-filter tests: posts split by predicate, docs with REPLICA IDENTITY FULL.
CREATE TABLE posts (
    id     integer PRIMARY KEY,
    status text,
    author integer NOT NULL,
    body   text,
    "share%" integer DEFAULT 0  -- not routed, but staged and copied: a `%` in a name is no placeholder
);
CREATE TABLE docs (
    id        integer PRIMARY KEY,
    published boolean NOT NULL DEFAULT false,
    body      text
);
ALTER TABLE docs REPLICA IDENTITY FULL;
