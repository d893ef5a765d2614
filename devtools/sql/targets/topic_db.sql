-- topic_db: the topic service.
-- Differences from the source (each one is expressed in topology.py):
--   * name and color are wider (varchar(150), varchar(16)) and color has a default the source lacks;
--   * post_count NOT NULL here (nullable in the source): coalesce(post_count, 0).

CREATE SCHEMA topic;

CREATE TABLE topic.topics (
    id         varchar(36)  NOT NULL,
    name       varchar(150) NOT NULL,
    color      varchar(16)  NOT NULL DEFAULT '#6b7280',
    post_count integer      NOT NULL DEFAULT 0,
    created_at timestamp(0) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at timestamp(0) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT topics_pkey PRIMARY KEY (id)
);
