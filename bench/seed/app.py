"""The seed stack: how teams serve cached search today, FastAPI + uvicorn with Redis cache-aside
over PostgreSQL through asyncpg.

POST /v1/search {query, k}: the key is the sha256 of the canonical request; a Redis hit is
returned as is; a miss reads the answer from PostgreSQL (table seed_answers, filled by the
benchmark with the exact bytes strata returns for the same queries), stores it in Redis for
10 minutes and returns it. Embedding and vector search are not modelled: only the cached
path is measured, and on it this is the whole of the work such an app does.

Environment: SEED_REDIS_URL, SEED_DATABASE_URL.
"""
import hashlib
import json
import os
from contextlib import asynccontextmanager

import asyncpg
import redis.asyncio as aioredis
from fastapi import FastAPI, HTTPException, Request, Response


@asynccontextmanager
async def lifespan(app: FastAPI):
    app.state.redis = aioredis.from_url(os.environ["SEED_REDIS_URL"], max_connections=64)
    app.state.pg = await asyncpg.create_pool(os.environ["SEED_DATABASE_URL"], min_size=2, max_size=10)
    yield
    await app.state.pg.close()
    await app.state.redis.aclose()


app = FastAPI(lifespan=lifespan)


def cache_key(query: str, k: int) -> str:
    canonical = json.dumps({"query": query.strip(), "k": k}, sort_keys=True, separators=(",", ":"))
    return "seed:search:" + hashlib.sha256(canonical.encode()).hexdigest()


@app.post("/v1/search")
async def search(request: Request) -> Response:
    body = await request.json()
    query, k = body.get("query"), int(body.get("k", 10))
    if not isinstance(query, str) or not query.strip():
        raise HTTPException(status_code=422, detail="query must be a non-empty string")
    key = cache_key(query, k)
    hit = await request.app.state.redis.get(key)
    if hit is not None:
        return Response(content=hit, media_type="application/json", headers={"x-cache": "HIT"})
    row = await request.app.state.pg.fetchval("SELECT body FROM seed_answers WHERE key = $1", key)
    if row is None:
        raise HTTPException(status_code=404, detail="no answer for this query")
    await request.app.state.redis.set(key, row, ex=600)
    return Response(content=row, media_type="application/json", headers={"x-cache": "MISS"})
