"""Drives strata's /mcp endpoint with the official MCP Python SDK (streamable HTTP client),
as an agent framework would: initialize, list the tools, add memories (created, merged,
superseded), recall them, search documents, and check that refused arguments come back as
tool errors. Exits non-zero on the first surprise. Called by scripts/mcp-check."""

import asyncio
import json
import sys

from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client


def check(cond, what):
    if not cond:
        print(f"FAIL: {what}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {what}")


async def main(url, token):
    headers = {"Authorization": f"Bearer {token}"}
    async with streamablehttp_client(url, headers=headers) as (read, write, _):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            check(init.serverInfo.name == "strata", "initialize names the server")
            check(init.capabilities.tools is not None, "the server offers tools")
            tools = {t.name: t for t in (await session.list_tools()).tools}
            check(
                {"memory_add", "memory_search", "memory_delete", "document_search"} <= set(tools),
                f"tools/list has the four tools ({sorted(tools)})",
            )
            check("text" in tools["memory_add"].inputSchema["properties"], "memory_add describes text")

            async def call(name, args):
                r = await session.call_tool(name, args)
                return r, (r.structuredContent or {})

            r, added = await call("memory_add", {"text": "The user's dog is a beagle named Pixel", "importance": 0.8})
            check(not r.isError and added["status"] == "created", "memory_add creates")
            r, again = await call("memory_add", {"text": "The user's dog is a beagle named Pixel"})
            check(again["status"] == "merged", "the same fact again merges")
            r, city = await call("memory_add", {"text": "The user lives in Ghent", "key": "home_city"})
            r, moved = await call("memory_add", {"text": "The user moved to Leuven", "key": "home_city"})
            check(moved["status"] == "superseded" and moved["superseded"] == city["memory"]["id"],
                  "a new value under a key supersedes")
            r, found = await call("memory_search", {"query": "what kind of pet does the user have?", "k": 3})
            check(not r.isError and found["hits"][0]["memory"]["text"].startswith("The user's dog"),
                  "memory_search recalls the pet")
            hit = found["hits"][0]
            check(set(hit["components"]) >= {"similarity", "recency", "importance", "access", "score"},
                  "a hit explains its score")
            r, found = await call("memory_search", {"query": "where does the user live", "k": 5})
            texts = [h["memory"]["text"] for h in found["hits"]]
            check("The user moved to Leuven" in texts and "The user lives in Ghent" not in texts,
                  "the superseded fact is not recalled")
            r, docs = await call("document_search", {"query": "anything", "k": 2})
            check(not r.isError and docs["hits"] == [], "document_search answers (no documents yet)")
            r, _ = await call("memory_add", {"text": ""})
            check(r.isError and "validation_failed" in r.content[0].text, "an empty text is a tool error")
            r, _ = await call("memory_search", {"query": "x", "colour": "red"})
            check(r.isError, "an unknown argument is a tool error")
            r, gone = await call("memory_delete", {"id": added["memory"]["id"]})
            check(not r.isError, "memory_delete forgets")
            r, found = await call("memory_search", {"query": "beagle", "k": 3})
            check(all("beagle" not in h["memory"]["text"] for h in found["hits"]), "a forgotten memory is not recalled")
            print(json.dumps({"tools": sorted(tools), "protocol": init.protocolVersion}))


asyncio.run(main(sys.argv[1], sys.argv[2]))
