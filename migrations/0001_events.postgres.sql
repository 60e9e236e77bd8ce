-- The normalized events, one row per raw record (upserted by event_id).
-- Plain-PostgreSQL flavour: declarative range partitioning on received_at (see
-- the TimescaleDB file for why received_at). Rows outside any dated partition
-- land in the default partition, so an insert never fails for want of one.
CREATE TABLE events (
    event_id          uuid        NOT NULL,
    received_at       timestamptz NOT NULL,
    ts                timestamptz NOT NULL,
    source            text        NOT NULL,
    dataset           text,
    log_level         text,
    host_name         text,
    process_name      text,
    process_pid       integer,
    user_name         text,
    event_action      text,
    event_outcome     text,
    source_ip         inet,
    source_port       integer,
    destination_ip    inet,
    destination_port  integer,
    http_method       text,
    http_status       smallint,
    url_original      text,
    user_agent        text,
    message           text,
    labels            jsonb,
    fields            jsonb,
    bytes             integer     NOT NULL,
    raw_topic         text        NOT NULL,
    raw_partition     integer     NOT NULL,
    raw_offset        bigint      NOT NULL,
    pipeline_version  text        NOT NULL,
    PRIMARY KEY (event_id, received_at)
) PARTITION BY RANGE (received_at);

CREATE TABLE events_default PARTITION OF events DEFAULT;

CREATE INDEX events_source_received_at ON events (source, received_at DESC);
CREATE INDEX events_ts ON events (ts DESC);
