-- Events and bytes per minute by source, dataset and level: the pipeline
-- overview's volume panels and "which source costs the most".
-- NULL dataset/level become '' so both flavours group (and key) alike.
-- WITH NO DATA: a continuous aggregate that materializes at creation cannot
-- run inside the migration's transaction; the policy fills it.
CREATE MATERIALIZED VIEW events_per_minute
WITH (timescaledb.continuous) AS
SELECT time_bucket(INTERVAL '1 minute', received_at) AS bucket,
       source,
       coalesce(dataset, '')   AS dataset,
       coalesce(log_level, '') AS log_level,
       count(*)                AS events,
       sum(bytes)::bigint      AS bytes
FROM events
GROUP BY 1, 2, 3, 4
WITH NO DATA;

SELECT add_continuous_aggregate_policy('events_per_minute',
    start_offset      => INTERVAL '3 days',
    end_offset        => INTERVAL '1 minute',
    schedule_interval => INTERVAL '1 minute');
