"""Loads the seed stack's source of truth: reads [{"query", "k", "body"}] (JSON, body as text)
from argv[2] into PostgreSQL at argv[1] (table seed_answers, recreated), keyed exactly as
app.py keys its cache, and deletes the seed's Redis keys at argv[3] so the first reads miss.
"""
import asyncio
import json
import sys

import asyncpg
import redis.asyncio as aioredis

from app import cache_key


async def main(dsn: str, path: str, redis_url: str) -> None:
    rows = json.load(open(path))
    conn = await asyncpg.connect(dsn)
    await conn.execute("DROP TABLE IF EXISTS seed_answers")
    await conn.execute("CREATE TABLE seed_answers (key text PRIMARY KEY, body bytea NOT NULL)")
    await conn.executemany(
        "INSERT INTO seed_answers (key, body) VALUES ($1, $2)",
        [(cache_key(r["query"], r["k"]), r["body"].encode()) for r in rows],
    )
    await conn.close()
    r = aioredis.from_url(redis_url)
    keys = [k async for k in r.scan_iter("seed:search:*")]
    if keys:
        await r.delete(*keys)
    await r.aclose()


asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
