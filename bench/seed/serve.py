"""Runs the seed stack the way it is shipped (`uvicorn app:app --workers N`), or with the
workaround for uvicorn issue #3149: with --workers, uvicorn binds the listening socket with
proto 0, accepted sockets inherit it, asyncio then never sets TCP_NODELAY, and every
keep-alive response after the first waits for the client's delayed ACK (~40 ms on Linux).
The workaround re-wraps the bound socket with proto IPPROTO_TCP.

Usage: serve.py PORT WORKERS [--nodelay-fix]
"""
import socket
import sys

import uvicorn
import uvicorn.config



def main() -> None:
    port, workers = int(sys.argv[1]), int(sys.argv[2])
    if "--nodelay-fix" in sys.argv[3:]:
        original = uvicorn.config.Config.bind_socket

        def bind_socket(self):
            sock = original(self)
            # Explicit proto overrides what Python detects from the descriptor; accepted
            # sockets inherit it, so asyncio enables TCP_NODELAY on each.
            return socket.socket(sock.family, sock.type, socket.IPPROTO_TCP, fileno=sock.detach())

        uvicorn.config.Config.bind_socket = bind_socket

    uvicorn.run("app:app", host="127.0.0.1", port=port, workers=workers, log_level="warning",
                access_log=False, app_dir=sys.path[0])


# Worker processes re-import this file (multiprocessing's spawn): only the supervisor runs.
if __name__ == "__main__":
    main()
