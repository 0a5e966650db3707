"""Drives strata's OpenAI-compatible routes with the official `openai` Python SDK: chat (JSON,
cached, streamed with reasoning and tool-call fragments), models, embeddings, and the SDK's
typed errors for an unknown model. Usage: openai_client.py BASE_URL API_KEY. Exits non-zero
on the first thing that is not as the SDK expects.
"""
import sys

import openai

base, key = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base, api_key=key, max_retries=0)
checks = 0


def check(cond, what):
    global checks
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)
    checks += 1
    print(f"ok: {what}")


messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello from the SDK"}]
r = client.chat.completions.with_raw_response.create(model="mock-1", messages=messages, temperature=0)
first = r.parse()
check(first.choices[0].message.content == "echo: hello from the SDK", "chat completion through the gateway")
check(r.headers.get("x-cache") == "MISS", "first answer is a miss")
r = client.chat.completions.with_raw_response.create(model="mock-1", messages=messages, temperature=0)
check(r.headers.get("x-cache") == "HIT-L1", "identical request is served from the cache")
check(r.parse().choices[0].message.content == first.choices[0].message.content, "cached answer is the same")

ask = [{"role": "user", "content": "use a tool please"}]
text, reasoning, args, usage = "", "", "", None
stream = client.chat.completions.create(model="mock-1", messages=ask, stream=True,
                                        stream_options={"include_usage": True})
for c in stream:
    if c.usage:
        usage = c.usage
    for ch in c.choices:
        d = ch.delta
        text += d.content or ""
        reasoning += (getattr(d, "reasoning_content", None) or (d.model_extra or {}).get("reasoning_content") or "")
        for t in d.tool_calls or []:
            args += t.function.arguments or ""
check(text == "echo: use a tool please", "streamed content")
check(reasoning == "thinking", "reasoning fragments pass through")
check(args == '{"q":"x"}', "tool-call argument fragments arrive in order")
check(usage is not None and usage.prompt_tokens > 0, "usage chunk when asked for")

# The same question again, as JSON: assembled from the cached stream.
r = client.chat.completions.with_raw_response.create(model="mock-1", messages=ask)
again = r.parse()
check(r.headers.get("x-cache") == "HIT-L1", "JSON request served from the cached stream")
check(again.choices[0].message.tool_calls[0].function.arguments == '{"q":"x"}', "assembled tool call")

ids = [m.id for m in client.models.list()]
check("mock-1" in ids, f"models list ({ids})")

e = client.embeddings.create(input=["first text", "second text"], model="all-MiniLM-L6-v2")
check(len(e.data) == 2 and len(e.data[0].embedding) == 384, "embeddings")

try:
    client.chat.completions.create(model="no-such-model", messages=messages)
    check(False, "unknown model refused")
except openai.NotFoundError as err:
    check(err.code == "model_not_found", f"unknown chat model is NotFoundError ({err.code})")
try:
    client.embeddings.create(input="x", model="text-embedding-3-small")
    check(False, "unknown embedding model refused")
except openai.NotFoundError as err:
    check("text-embedding-3-small" in str(err), "unknown embedding model says which")
try:
    client.chat.completions.create(model="mock-1", messages=[])
    check(False, "empty messages refused")
except openai.BadRequestError as err:
    check(err.param == "messages", "a bad field is BadRequestError naming it")
bad = openai.OpenAI(base_url=base, api_key="not-a-token", max_retries=0)
try:
    bad.models.list()
    check(False, "bad key refused")
except openai.AuthenticationError:
    check(True, "a bad key is AuthenticationError")
print(f"{checks} checks passed")
