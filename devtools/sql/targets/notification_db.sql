-- notification_db: the notification service.
-- Differences from the source (each one is expressed in topology.py):
--   * its own notification_action enum with extra values ('mentioned', 'commented');
--   * content, is_sent, is_read NOT NULL here (nullable in the source): coalesce(...), with defaults
--     the source lacks;
--   * channel exists only here (an enum the source has no notion of); topology.py fills it with the
--     constant 'in_app'.

CREATE SCHEMA notification;

CREATE TYPE notification.notification_action AS ENUM ('liked', 'followed', 'replied', 'mentioned', 'commented');
CREATE TYPE notification.delivery_channel AS ENUM ('in_app', 'email', 'push');

CREATE TABLE notification.notifications (
    id          varchar(36)                      NOT NULL,
    receiver_id varchar(36)                      NOT NULL,
    actor_id    varchar(36),
    action      notification.notification_action NOT NULL DEFAULT 'liked',
    content     text                             NOT NULL DEFAULT '',
    channel     notification.delivery_channel    NOT NULL DEFAULT 'push',
    is_sent     boolean                          NOT NULL DEFAULT false,
    is_read     boolean                          NOT NULL DEFAULT false,
    created_at  timestamp(0)                     NOT NULL,
    updated_at  timestamp(0)                     NOT NULL,
    CONSTRAINT notifications_pkey PRIMARY KEY (id)
);
CREATE INDEX notifications_receiver_id_idx ON notification.notifications (receiver_id);
