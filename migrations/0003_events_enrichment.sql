-- What the enrich stage adds: the source address's country and city, its
-- autonomous system and asset owner (typed: dashboards group by them), the
-- threat indicator an event matched, and the rest of the enrichment (geo
-- points, destination data) as jsonb.
ALTER TABLE events
    ADD COLUMN source_country      text,
    ADD COLUMN source_city         text,
    ADD COLUMN source_asn          bigint,
    ADD COLUMN source_asset_owner  text,
    ADD COLUMN threat_indicator    text,
    ADD COLUMN enrichment          jsonb;
