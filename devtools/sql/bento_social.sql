-- bento_social: the shared database every Bento Social service used before the split.
--
-- Shape as the monolith left it (Prisma-style): CamelCase enum types, UUIDs as varchar(36), no foreign
-- keys, no unique index on users.username (the application checked it), counters kept by the application.
-- Meant for an empty database; splitter never runs this against production.

CREATE TYPE "NotificationAction" AS ENUM ('liked', 'followed', 'replied');
CREATE TYPE "CommentStatus" AS ENUM ('pending', 'approved', 'rejected', 'deleted', 'spam');
CREATE TYPE "PostType" AS ENUM ('text', 'media');
CREATE TYPE "UserRole" AS ENUM ('user', 'admin');
CREATE TYPE "UserStatus" AS ENUM ('active', 'pending', 'inactive', 'banned', 'deleted');

CREATE TABLE users (
    id             varchar(36)  NOT NULL,
    cover          varchar(255),
    avatar         varchar(255),
    username       varchar(100) NOT NULL,
    first_name     varchar(100) NOT NULL,
    last_name      varchar(100) NOT NULL,
    password       varchar(100) NOT NULL,
    salt           varchar(50)  NOT NULL,
    role           "UserRole"   NOT NULL DEFAULT 'user',
    bio            varchar(255),
    website_url    varchar(255),
    follower_count integer      DEFAULT 0,
    post_count     integer      DEFAULT 0,
    status         "UserStatus" DEFAULT 'active',
    created_at     timestamp(0) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at     timestamp(0) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT users_pkey PRIMARY KEY (id)
);
-- Not unique: the monolith never enforced it (user_db does).
CREATE INDEX users_username_idx ON users (username);

CREATE TABLE followers (
    follower_id  varchar(36)  NOT NULL,
    following_id varchar(36)  NOT NULL,
    created_at   timestamp(3) NOT NULL,
    CONSTRAINT followers_pkey PRIMARY KEY (following_id, follower_id)
);
CREATE INDEX followers_follower_id_idx ON followers (follower_id);

CREATE TABLE posts (
    id            varchar(36)  NOT NULL,
    content       text         NOT NULL,
    image         varchar(255),
    author_id     varchar(36)  NOT NULL,
    topic_id      varchar(36)  NOT NULL,
    is_featured   boolean      DEFAULT false,
    comment_count integer      DEFAULT 0,
    liked_count   integer      DEFAULT 0,
    type          "PostType"   DEFAULT 'text',
    created_at    timestamp(0) NOT NULL,
    updated_at    timestamp(0) NOT NULL,
    CONSTRAINT posts_pkey PRIMARY KEY (id)
);
CREATE INDEX posts_author_id_idx ON posts (author_id);

CREATE TABLE topics (
    id         varchar(36)  NOT NULL,
    name       varchar(100) NOT NULL,
    color      varchar(10)  NOT NULL,
    post_count integer      DEFAULT 0,
    created_at timestamp(0) NOT NULL,
    updated_at timestamp(0) NOT NULL,
    CONSTRAINT topics_pkey PRIMARY KEY (id)
);

CREATE TABLE comments (
    id          varchar(36)     NOT NULL,
    user_id     varchar(36)     NOT NULL,
    post_id     varchar(36)     NOT NULL,
    parent_id   varchar(36),
    content     text            NOT NULL,
    liked_count integer         NOT NULL DEFAULT 0,
    reply_count integer         NOT NULL DEFAULT 0,
    status      "CommentStatus" NOT NULL DEFAULT 'pending',
    created_at  timestamp(3)    NOT NULL,
    updated_at  timestamp(3),
    CONSTRAINT comments_pkey PRIMARY KEY (id)
);
CREATE INDEX comments_post_id_idx ON comments (post_id);

CREATE TABLE comment_likes (
    comment_id varchar(36)  NOT NULL,
    user_id    varchar(36)  NOT NULL,
    created_at timestamp(3) NOT NULL,
    CONSTRAINT comment_likes_pkey PRIMARY KEY (comment_id, user_id)
);

CREATE TABLE notifications (
    id          varchar(36)          NOT NULL,
    receiver_id varchar(36)          NOT NULL,
    actor_id    varchar(36),
    content     text,
    action      "NotificationAction" NOT NULL DEFAULT 'liked',
    is_sent     boolean,
    is_read     boolean,
    created_at  timestamp(0)         NOT NULL,
    updated_at  timestamp(0)         NOT NULL,
    CONSTRAINT notifications_pkey PRIMARY KEY (id)
);
CREATE INDEX notifications_receiver_id_idx ON notifications (receiver_id);

CREATE TABLE post_likes (
    post_id    varchar(36)  NOT NULL,
    user_id    varchar(36)  NOT NULL,
    created_at timestamp(3) NOT NULL,
    CONSTRAINT post_likes_pkey PRIMARY KEY (post_id, user_id)
);

CREATE TABLE post_saves (
    post_id    varchar(36)  NOT NULL,
    user_id    varchar(36)  NOT NULL,
    created_at timestamp(3) NOT NULL,
    CONSTRAINT post_saves_pkey PRIMARY KEY (post_id, user_id)
);
