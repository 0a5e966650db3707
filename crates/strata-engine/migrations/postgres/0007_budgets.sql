-- The gateway's budgets and usage: the same tables and meanings as SQLite's (0009_budgets.sql).
-- A tenant's limits, one per period (minute, day, month); NULL = not limited on that axis.
CREATE TABLE budgets (
    owner      TEXT NOT NULL,
    period     TEXT NOT NULL,
    max_tokens BIGINT,
    max_cost   BIGINT,
    PRIMARY KEY (owner, period)
);
-- What each window has settled and holds reserved by calls in flight.
CREATE TABLE budget_windows (
    owner           TEXT NOT NULL,
    period          TEXT NOT NULL,
    window_start    BIGINT NOT NULL,
    used_tokens     BIGINT NOT NULL,
    used_cost       BIGINT NOT NULL,
    reserved_tokens BIGINT NOT NULL,
    reserved_cost   BIGINT NOT NULL,
    PRIMARY KEY (owner, period, window_start)
);
-- Calls in flight: their estimate, the windows it was reserved in, and a lease after which
-- any process releases it (the call's process crashed).
CREATE TABLE budget_reservations (
    id          TEXT PRIMARY KEY NOT NULL,
    owner       TEXT NOT NULL,
    windows     TEXT NOT NULL,
    tokens      BIGINT NOT NULL,
    cost        BIGINT NOT NULL,
    lease_until BIGINT NOT NULL
);
CREATE INDEX budget_reservations_lease ON budget_reservations (lease_until);
-- The usage ledger, per tenant, UTC day and upstream model.
CREATE TABLE usage_daily (
    owner             TEXT NOT NULL,
    day               TEXT NOT NULL,
    model             TEXT NOT NULL,
    requests          BIGINT NOT NULL,
    cached_requests   BIGINT NOT NULL,
    prompt_tokens     BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    cost              BIGINT NOT NULL,
    saved_tokens      BIGINT NOT NULL,
    saved_cost        BIGINT NOT NULL,
    PRIMARY KEY (owner, day, model)
);
