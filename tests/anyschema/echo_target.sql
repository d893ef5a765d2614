-- The service databases' side of echo.sql: profile_db does not map login, so it is nullable here.
CREATE TABLE accounts (id integer PRIMARY KEY, login text, profile text);
