-- Every service database of the row-filter tests has both tables; each service fills the ones it routes.
CREATE TABLE posts (
    id     integer PRIMARY KEY,
    status text,
    author integer NOT NULL,
    body   text
);
CREATE TABLE docs (
    id        integer PRIMARY KEY,
    published boolean NOT NULL,
    body      text
);
