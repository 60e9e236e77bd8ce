-- Nothing to do: continuous aggregates refresh whole buckets themselves (the
-- PostgreSQL file fixes the rollup function of that flavour).
SELECT 1;
