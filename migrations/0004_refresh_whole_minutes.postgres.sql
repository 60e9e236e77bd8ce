-- firstmile_refresh_events_per_minute recomputes whole minutes: every bucket
-- that [from_ts, to_ts] touches, from the start of from_ts's minute to the end
-- of to_ts's. (0002 stopped at to_ts itself, so the last bucket of a range
-- could be rebuilt from part of its rows.)
CREATE OR REPLACE FUNCTION firstmile_refresh_events_per_minute(from_ts timestamptz, to_ts timestamptz)
RETURNS void LANGUAGE sql AS $$
    DELETE FROM events_per_minute
     WHERE bucket >= date_trunc('minute', from_ts)
       AND bucket <  date_trunc('minute', to_ts) + INTERVAL '1 minute';
    INSERT INTO events_per_minute (bucket, source, dataset, log_level, events, bytes)
    SELECT date_trunc('minute', received_at), source,
           coalesce(dataset, ''), coalesce(log_level, ''), count(*), sum(bytes)
      FROM events
     WHERE received_at >= date_trunc('minute', from_ts)
       AND received_at <  date_trunc('minute', to_ts) + INTERVAL '1 minute'
     GROUP BY 1, 2, 3, 4;
$$;
