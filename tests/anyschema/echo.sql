-- The any-schema test of the reverse stream's echo (run as-is in the source and in each service database): a
-- table two services share, `owner` owning its rows and `login`, `profile` owning `profile`.
CREATE TABLE accounts (id integer PRIMARY KEY, login text NOT NULL, profile text);
