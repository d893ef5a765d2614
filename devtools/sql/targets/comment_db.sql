-- comment_db: the comment service.
-- Differences from the source (each one is expressed in topology.py):
--   * its own comment_status enum with an extra value ('hidden') and a different default ('approved');
--   * updated_at NOT NULL here (nullable in the source): coalesce(updated_at, created_at).
-- Timestamps keep their millisecond precision here (timestamp(3), as in the source).

CREATE SCHEMA comment;

CREATE TYPE comment.comment_status AS ENUM ('pending', 'approved', 'rejected', 'deleted', 'spam', 'hidden');

CREATE TABLE comment.comments (
    id          varchar(36)            NOT NULL,
    post_id     varchar(36)            NOT NULL,
    user_id     varchar(36)            NOT NULL,
    parent_id   varchar(36),
    content     text                   NOT NULL,
    liked_count integer                NOT NULL DEFAULT 0,
    reply_count integer                NOT NULL DEFAULT 0,
    status      comment.comment_status NOT NULL DEFAULT 'approved',
    created_at  timestamp(3)           NOT NULL,
    updated_at  timestamp(3)           NOT NULL,
    CONSTRAINT comments_pkey PRIMARY KEY (id)
);
CREATE INDEX comments_post_id_idx ON comment.comments (post_id);
