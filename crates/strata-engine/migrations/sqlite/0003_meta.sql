-- Facts about this store itself. `store_id` is a random id made when the store is created:
-- the cache salts tenant scopes with it, so processes over the same database share cached
-- entries and processes over different databases never do, even through one Redis.
CREATE TABLE strata_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
