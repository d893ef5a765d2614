-- auth_db: the auth service keeps only what login needs from bento_social.users.
-- Differences from the source (each one is expressed in topology.py):
--   * projection: no profile columns (cover, avatar, names, bio, website, counters);
--   * column renamed: password -> password_hash;
--   * its own enum types, with values the source lacks (user_role.moderator, account_status.locked);
--   * status is NOT NULL here (nullable in the source): filled with coalesce(status, 'active');
--   * username is wider (varchar(150) vs varchar(100));
--   * mfa_enabled exists only here; topology.py leaves it out, so the database default fills it.

CREATE SCHEMA auth;

CREATE TYPE auth.user_role AS ENUM ('user', 'admin', 'moderator');
CREATE TYPE auth.account_status AS ENUM ('active', 'pending', 'inactive', 'banned', 'deleted', 'locked');

CREATE TABLE auth.users (
    id            varchar(36)         NOT NULL,
    username      varchar(150)        NOT NULL,
    password_hash varchar(100)        NOT NULL,
    salt          varchar(50)         NOT NULL,
    role          auth.user_role      NOT NULL DEFAULT 'user',
    status        auth.account_status NOT NULL DEFAULT 'active',
    mfa_enabled   boolean             NOT NULL DEFAULT false,
    created_at    timestamp(0)        NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at    timestamp(0)        NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT users_pkey PRIMARY KEY (id)
);
CREATE INDEX users_username_idx ON auth.users (username);
