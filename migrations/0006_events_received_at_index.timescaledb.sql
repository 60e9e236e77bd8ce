-- Nothing to do: create_hypertable made an index on received_at (see the
-- PostgreSQL file).
SELECT 1;
