-- The aggregates the dashboards read, besides events_per_minute:
--   bytes_per_source_hour     which sources cost the most (raw bytes)
--   failed_logins_per_minute  failed logins by user and source address
--   http_status_per_minute    HTTP status classes (2xx, 4xx, ...) per host
-- All bucket on received_at (see 0001). WITH NO DATA: the policies fill them,
-- and the sink refreshes ranges older than the policies' window.
CREATE MATERIALIZED VIEW bytes_per_source_hour
WITH (timescaledb.continuous) AS
SELECT time_bucket(INTERVAL '1 hour', received_at) AS bucket,
       source,
       count(*)           AS events,
       sum(bytes)::bigint AS bytes
FROM events
GROUP BY 1, 2
WITH NO DATA;

CREATE MATERIALIZED VIEW failed_logins_per_minute
WITH (timescaledb.continuous) AS
SELECT time_bucket(INTERVAL '1 minute', received_at) AS bucket,
       source,
       coalesce(user_name, '')           AS user_name,
       coalesce(host(source_ip), '')     AS source_ip,
       count(*)                          AS failures
FROM events
WHERE event_outcome = 'failure'
   OR event_action ILIKE 'failed%'
   OR event_action ILIKE '%authentication failure%'
GROUP BY 1, 2, 3, 4
WITH NO DATA;

CREATE MATERIALIZED VIEW http_status_per_minute
WITH (timescaledb.continuous) AS
SELECT time_bucket(INTERVAL '1 minute', received_at) AS bucket,
       coalesce(host_name, '')            AS host_name,
       (http_status / 100)::int * 100     AS status_class,
       count(*)                           AS responses
FROM events
WHERE http_status IS NOT NULL
GROUP BY 1, 2, 3
WITH NO DATA;

SELECT add_continuous_aggregate_policy('bytes_per_source_hour',
    start_offset => INTERVAL '3 days', end_offset => INTERVAL '1 minute',
    schedule_interval => INTERVAL '5 minutes');
SELECT add_continuous_aggregate_policy('failed_logins_per_minute',
    start_offset => INTERVAL '3 days', end_offset => INTERVAL '1 minute',
    schedule_interval => INTERVAL '1 minute');
SELECT add_continuous_aggregate_policy('http_status_per_minute',
    start_offset => INTERVAL '3 days', end_offset => INTERVAL '1 minute',
    schedule_interval => INTERVAL '1 minute');

-- Rows are kept 90 days, aggregates a year. Chunks are compressed only after
-- 35 days: the raw topics are the replay log for 30, and a replay upserts into
-- its chunks; ON CONFLICT into compressed chunks is slow (and wrong in some
-- TimescaleDB versions), so the replay horizon stays uncompressed.
ALTER TABLE events SET (timescaledb.compress, timescaledb.compress_segmentby = 'source');
SELECT add_compression_policy('events', compress_after => INTERVAL '35 days');
SELECT add_retention_policy('events', drop_after => INTERVAL '90 days');
SELECT add_retention_policy('events_per_minute', drop_after => INTERVAL '365 days');
SELECT add_retention_policy('bytes_per_source_hour', drop_after => INTERVAL '365 days');
SELECT add_retention_policy('failed_logins_per_minute', drop_after => INTERVAL '365 days');
SELECT add_retention_policy('http_status_per_minute', drop_after => INTERVAL '365 days');
