-- The service side of the DEFAULT tests: columns with defaults of the service's own.
CREATE TYPE account_state AS ENUM ('fresh', 'active', 'closed');
CREATE TABLE accounts (
    id      integer PRIMARY KEY,
    status  account_state NOT NULL DEFAULT 'fresh',
    score   integer       NOT NULL DEFAULT -1,
    tags    text[]        NOT NULL DEFAULT '{}',
    note    text          DEFAULT 'n/a',
    created timestamptz   DEFAULT now(),
    plain   text
);
