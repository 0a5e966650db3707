-- The gateway's budgets and usage. Costs are integer micro-dollars; times Unix milliseconds.
-- A tenant's limits, one per period (minute, day, month); NULL = not limited on that axis.
CREATE TABLE budgets (
    owner      TEXT NOT NULL,
    period     TEXT NOT NULL,
    max_tokens INTEGER,
    max_cost   INTEGER,
    PRIMARY KEY (owner, period)
);
-- What each window has settled and holds reserved by calls in flight.
CREATE TABLE budget_windows (
    owner           TEXT NOT NULL,
    period          TEXT NOT NULL,
    window_start    INTEGER NOT NULL,
    used_tokens     INTEGER NOT NULL,
    used_cost       INTEGER NOT NULL,
    reserved_tokens INTEGER NOT NULL,
    reserved_cost   INTEGER NOT NULL,
    PRIMARY KEY (owner, period, window_start)
);
-- Calls in flight: their estimate, the windows it was reserved in, and a lease after which
-- any process releases it (the call's process crashed).
CREATE TABLE budget_reservations (
    id          TEXT PRIMARY KEY NOT NULL,
    owner       TEXT NOT NULL,
    windows     TEXT NOT NULL,
    tokens      INTEGER NOT NULL,
    cost        INTEGER NOT NULL,
    lease_until INTEGER NOT NULL
);
CREATE INDEX budget_reservations_lease ON budget_reservations (lease_until);
-- The usage ledger, per tenant, UTC day and upstream model.
CREATE TABLE usage_daily (
    owner             TEXT NOT NULL,
    day               TEXT NOT NULL,
    model             TEXT NOT NULL,
    requests          INTEGER NOT NULL,
    cached_requests   INTEGER NOT NULL,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cost              INTEGER NOT NULL,
    saved_tokens      INTEGER NOT NULL,
    saved_cost        INTEGER NOT NULL,
    PRIMARY KEY (owner, day, model)
);
