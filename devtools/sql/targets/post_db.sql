-- post_db: the post service.
-- Differences from the source (each one is expressed in topology.py):
--   * its own post_type enum with extra values ('link', 'poll');
--   * type, is_featured, comment_count, liked_count NOT NULL here (nullable in the source): coalesce(...);
--   * image is wider (varchar(512));
--   * different default: type defaults to 'text' as before, but is_featured has none (always written).

CREATE SCHEMA post;

CREATE TYPE post.post_type AS ENUM ('text', 'media', 'link', 'poll');

CREATE TABLE post.posts (
    id            varchar(36)    NOT NULL,
    author_id     varchar(36)    NOT NULL,
    topic_id      varchar(36)    NOT NULL,
    type          post.post_type NOT NULL DEFAULT 'text',
    content       text           NOT NULL,
    image         varchar(512),
    is_featured   boolean        NOT NULL,
    comment_count integer        NOT NULL DEFAULT 0,
    liked_count   integer        NOT NULL DEFAULT 0,
    created_at    timestamp(0)   NOT NULL,
    updated_at    timestamp(0)   NOT NULL,
    CONSTRAINT posts_pkey PRIMARY KEY (id)
);
CREATE INDEX posts_author_id_idx ON post.posts (author_id);
