-- The dashboards' aggregates (see the TimescaleDB file) as rollup tables,
-- recomputed for whole buckets by firstmile_refresh_rollups(from, to), which
-- the sink calls after every batch (it also refreshes events_per_minute).
-- Retention on plain PostgreSQL is the operator's: drop old partitions.
CREATE TABLE bytes_per_source_hour (
    bucket  timestamptz NOT NULL,
    source  text        NOT NULL,
    events  bigint      NOT NULL,
    bytes   bigint      NOT NULL,
    PRIMARY KEY (bucket, source)
);

CREATE TABLE failed_logins_per_minute (
    bucket     timestamptz NOT NULL,
    source     text        NOT NULL,
    user_name  text        NOT NULL,
    source_ip  text        NOT NULL,
    failures   bigint      NOT NULL,
    PRIMARY KEY (bucket, source, user_name, source_ip)
);

CREATE TABLE http_status_per_minute (
    bucket        timestamptz NOT NULL,
    host_name     text        NOT NULL,
    status_class  integer     NOT NULL,
    responses     bigint      NOT NULL,
    PRIMARY KEY (bucket, host_name, status_class)
);

CREATE FUNCTION firstmile_refresh_rollups(from_ts timestamptz, to_ts timestamptz)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    m0 timestamptz := date_trunc('minute', from_ts);
    m1 timestamptz := date_trunc('minute', to_ts) + INTERVAL '1 minute';
    h0 timestamptz := date_trunc('hour', from_ts);
    h1 timestamptz := date_trunc('hour', to_ts) + INTERVAL '1 hour';
BEGIN
    PERFORM firstmile_refresh_events_per_minute(from_ts, to_ts);

    DELETE FROM bytes_per_source_hour WHERE bucket >= h0 AND bucket < h1;
    INSERT INTO bytes_per_source_hour (bucket, source, events, bytes)
    SELECT date_trunc('hour', received_at), source, count(*), sum(bytes)
      FROM events WHERE received_at >= h0 AND received_at < h1
     GROUP BY 1, 2;

    DELETE FROM failed_logins_per_minute WHERE bucket >= m0 AND bucket < m1;
    INSERT INTO failed_logins_per_minute (bucket, source, user_name, source_ip, failures)
    SELECT date_trunc('minute', received_at), source, coalesce(user_name, ''),
           coalesce(host(source_ip), ''), count(*)
      FROM events
     WHERE received_at >= m0 AND received_at < m1
       AND (event_outcome = 'failure' OR event_action ILIKE 'failed%'
            OR event_action ILIKE '%authentication failure%')
     GROUP BY 1, 2, 3, 4;

    DELETE FROM http_status_per_minute WHERE bucket >= m0 AND bucket < m1;
    INSERT INTO http_status_per_minute (bucket, host_name, status_class, responses)
    SELECT date_trunc('minute', received_at), coalesce(host_name, ''),
           (http_status / 100)::int * 100, count(*)
      FROM events
     WHERE received_at >= m0 AND received_at < m1 AND http_status IS NOT NULL
     GROUP BY 1, 2, 3;
END;
$$;
