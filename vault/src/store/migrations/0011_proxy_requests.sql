-- Finished requests that remote proxies report, for the console's recent
-- requests across the fleet. Pruned to a day.
CREATE TABLE IF NOT EXISTS proxy_requests (
    id TEXT PRIMARY KEY,
    at BIGINT NOT NULL,
    proxy TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS proxy_requests_at ON proxy_requests (at)
