-- Events and bytes per minute by source, dataset and level (see the
-- TimescaleDB file). Plain PostgreSQL has no continuous aggregates: this is a
-- rollup table with the same name and columns, recomputed for a time range by
-- firstmile_refresh_events_per_minute (called by the sink after it writes).
-- Recomputing (not incrementing) keeps it right when replays replace rows.
CREATE TABLE events_per_minute (
    bucket     timestamptz NOT NULL,
    source     text        NOT NULL,
    dataset    text        NOT NULL,
    log_level  text        NOT NULL,
    events     bigint      NOT NULL,
    bytes      bigint      NOT NULL,
    PRIMARY KEY (bucket, source, dataset, log_level)
);

CREATE FUNCTION firstmile_refresh_events_per_minute(from_ts timestamptz, to_ts timestamptz)
RETURNS void LANGUAGE sql AS $$
    DELETE FROM events_per_minute
     WHERE bucket >= date_trunc('minute', from_ts) AND bucket < to_ts;
    INSERT INTO events_per_minute (bucket, source, dataset, log_level, events, bytes)
    SELECT date_trunc('minute', received_at), source,
           coalesce(dataset, ''), coalesce(log_level, ''), count(*), sum(bytes)
      FROM events
     WHERE received_at >= date_trunc('minute', from_ts) AND received_at < to_ts
     GROUP BY 1, 2, 3, 4;
$$;
