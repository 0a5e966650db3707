"""A local OpenAI-compatible chat upstream for checks that run real clients through strata's
gateway (stdlib only). POST /v1/chat/completions answers `echo: <last message>` as JSON or
as SSE chunks (8 characters each), with `reasoning_content` deltas and, when the last message
asks for a tool, a tool call split over deltas; usage is reported when asked for. GET
/v1/models lists `mock-1`. Usage: mock_upstream.py PORT_FILE (writes the port it bound).
"""
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def chunk(cid, model, delta, finish=None):
    return {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()),
            "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send_json(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path.rstrip("/") == "/v1/models":
            self.send_json(200, {"object": "list", "data": [
                {"id": "mock-1", "object": "model", "created": 0, "owned_by": "mock"}]})
        else:
            self.send_json(404, {"error": {"message": "no such route", "type": "invalid_request_error"}})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", "0"))) or b"{}")
        if self.path.rstrip("/") != "/v1/chat/completions":
            self.send_json(404, {"error": {"message": "no such route", "type": "invalid_request_error"}})
            return
        content = (body.get("messages") or [{}])[-1].get("content") or ""
        model = body.get("model", "mock-1")
        answer = "echo: " + content
        pieces = [answer[i:i + 8] for i in range(0, len(answer), 8)]
        usage = {"prompt_tokens": len(content), "completion_tokens": len(pieces),
                 "total_tokens": len(content) + len(pieces)}
        tool = "tool" in content
        if not body.get("stream"):
            message = {"role": "assistant", "content": answer, "reasoning_content": "thinking"}
            if tool:
                message["tool_calls"] = [{"id": "call_1", "type": "function",
                                          "function": {"name": "lookup", "arguments": "{\"q\":\"x\"}"}}]
            self.send_json(200, {"id": "chatcmpl-1", "object": "chat.completion",
                                 "created": int(time.time()), "model": model,
                                 "choices": [{"index": 0, "message": message,
                                              "finish_reason": "tool_calls" if tool else "stop"}],
                                 "usage": usage})
            return
        events = [chunk("chatcmpl-1", model, {"role": "assistant", "content": ""}),
                  chunk("chatcmpl-1", model, {"reasoning_content": "think"}),
                  chunk("chatcmpl-1", model, {"reasoning_content": "ing"})]
        if tool:
            events.append(chunk("chatcmpl-1", model, {"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":"}}]}))
            events.append(chunk("chatcmpl-1", model, {"tool_calls": [{"index": 0, "function": {"arguments": "\"x\"}"}}]}))
        events += [chunk("chatcmpl-1", model, {"content": p}) for p in pieces]
        events.append(chunk("chatcmpl-1", model, {}, "tool_calls" if tool else "stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append({"id": "chatcmpl-1", "object": "chat.completion.chunk",
                           "created": int(time.time()), "model": model, "choices": [], "usage": usage})
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for e in events + ["[DONE]"]:
            data = ("data: " + (e if isinstance(e, str) else json.dumps(e)) + "\n\n").encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(sys.argv[1], "w") as f:
        f.write(str(server.server_address[1]))
    server.serve_forever()
