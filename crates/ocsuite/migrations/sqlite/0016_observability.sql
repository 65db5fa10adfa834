-- Mirrors postgres/0016_observability.sql, which adds functions only: SQLite has none,
-- and reads the same figures with plain queries (store/cross_tenant). No change here.
SELECT 1;
