-- user_db: the user service owns profiles and the social graph.
-- Differences from the source (each one is expressed in topology.py):
--   * a UNIQUE index on users.username that bento_social never enforced (data generator and workload
--     only ever produce unique usernames);
--   * its own user_status enum with an extra value ('suspended');
--   * follower_count, post_count, status NOT NULL here (nullable in the source): coalesce(...);
--   * wider varchars (names 150, cover/avatar/website 512) and bio as text;
--   * visibility exists only here; topology.py fills it with the constant 'public';
--   * followers.created_at narrowed from timestamp(3) to timestamp(0) with an explicit
--     date_trunc('second', ...) (a plain cast would round to the nearest second instead).

CREATE SCHEMA users;

CREATE TYPE users.user_status AS ENUM ('active', 'pending', 'inactive', 'banned', 'deleted', 'suspended');
CREATE TYPE users.profile_visibility AS ENUM ('public', 'followers_only', 'private');

CREATE TABLE users.users (
    id             varchar(36)              NOT NULL,
    username       varchar(100)             NOT NULL,
    first_name     varchar(150)             NOT NULL,
    last_name      varchar(150)             NOT NULL,
    cover          varchar(512),
    avatar         varchar(512),
    bio            text,
    website_url    varchar(512),
    follower_count integer                  NOT NULL DEFAULT 0,
    post_count     integer                  NOT NULL DEFAULT 0,
    status         users.user_status        NOT NULL DEFAULT 'active',
    visibility     users.profile_visibility NOT NULL DEFAULT 'followers_only',
    created_at     timestamp(0)             NOT NULL,
    updated_at     timestamp(0)             NOT NULL,
    CONSTRAINT users_pkey PRIMARY KEY (id)
);
CREATE UNIQUE INDEX users_username_key ON users.users (username);

CREATE TABLE users.followers (
    following_id varchar(36)  NOT NULL,
    follower_id  varchar(36)  NOT NULL,
    created_at   timestamp(0) NOT NULL,
    CONSTRAINT followers_pkey PRIMARY KEY (following_id, follower_id)
);
CREATE INDEX followers_follower_id_idx ON users.followers (follower_id);
