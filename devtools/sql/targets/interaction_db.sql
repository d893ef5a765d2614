-- interaction_db: likes, saves and follows, as the interaction service counts them.
-- Differences from the source (each one is expressed in topology.py):
--   * followers is fanned out here too (it also goes to user_db), renamed to "follows", with its key
--     columns in the other order (follower_id, following_id);
--   * post_likes.created_at narrowed from timestamp(3) to timestamp(0) with date_trunc('second', ...);
--   * post_saves is keyed (user_id, post_id), the reverse of the source, and keeps timestamp(3).

CREATE SCHEMA interaction;

CREATE TABLE interaction.post_likes (
    post_id    varchar(36)  NOT NULL,
    user_id    varchar(36)  NOT NULL,
    created_at timestamp(0) NOT NULL,
    CONSTRAINT post_likes_pkey PRIMARY KEY (post_id, user_id)
);
CREATE INDEX post_likes_user_id_idx ON interaction.post_likes (user_id);

CREATE TABLE interaction.post_saves (
    user_id    varchar(36)  NOT NULL,
    post_id    varchar(36)  NOT NULL,
    created_at timestamp(3) NOT NULL,
    CONSTRAINT post_saves_pkey PRIMARY KEY (user_id, post_id)
);

CREATE TABLE interaction.follows (
    follower_id  varchar(36)  NOT NULL,
    following_id varchar(36)  NOT NULL,
    created_at   timestamp(3) NOT NULL,
    CONSTRAINT follows_pkey PRIMARY KEY (follower_id, following_id)
);
CREATE INDEX follows_following_id_idx ON interaction.follows (following_id);
