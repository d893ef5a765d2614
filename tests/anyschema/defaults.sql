-- The source of the DEFAULT tests: every mapped column nullable, so a NULL can meet the target's default.
CREATE TABLE accounts (
    id      integer PRIMARY KEY,
    status  text,
    score   integer,
    tags    text[],
    note    text,
    created timestamptz
);
