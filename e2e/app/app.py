"""The end-to-end tests' application: a JSON service and a driver that calls one on request.

    app.py --serve HOST:PORT [--name NAME]      a JSON API (keep-alive HTTP/1.1)
    app.py --control HOST:PORT                  the driver: `POST /run?target=IP:PORT&n=N&path=/api/...`
                                                makes N JSON calls to the target over one keep-alive
                                                connection and answers, in text/plain, one line per call:
                                                `<request id> <status>`
    app.py --relay HOST:PORT=TARGET:PORT       a sidecar's inbound leg: each connection accepted is
                                                forwarded, byte for byte, to TARGET (from loopback when
                                                TARGET is), as a mesh proxy forwards inbound calls
Any may be given together: one process serves, drives and relays. The driver answers in text/plain so that
the tests' own control calls are dropped by the content-type rule and never counted as the application's
pairs.
"""

import argparse
import http.client
import json
import socket
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


def address(text):
    host, _, port = text.rpartition(":")
    return host, int(port)


class Api(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    name = "app"

    def log_message(self, *args):
        pass

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def request_body(self):
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_GET(self):
        path = urlsplit(self.path).path
        if path == "/healthz":
            self.reply(200, {"status": "ok"})
        elif path.startswith("/api/"):
            self.reply(200, {"service": self.name, "path": path, "id": self.headers.get("X-Request-Id")})
        else:
            self.reply(404, {"error": "not found"})

    def do_POST(self):
        path, body = urlsplit(self.path).path, self.request_body()
        if path.startswith("/api/"):
            self.reply(201, {"service": self.name, "received": json.loads(body or b"{}")})
        else:
            self.reply(404, {"error": "not found"})


class Control(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if url.path != "/run" or "target" not in query:
            return self.answer(404, "POST /run?target=IP:PORT&n=N&path=/api/...\n")
        try:
            lines = run(address(query["target"]), int(query.get("n", "1")), query.get("path", "/api/items"))
        except (OSError, ValueError, http.client.HTTPException) as e:
            return self.answer(502, f"error {e}\n")
        self.answer(200, "".join(f"{rid} {status}\n" for rid, status in lines))

    def answer(self, status, text):
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def relay_spec(text):
    """`HOST:PORT=TARGET:PORT` as (listen, target)."""
    listen, sep, target = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r}: HOST:PORT=TARGET:PORT")
    return address(listen), address(target)


def relay(listen, target):
    """Accept connections on `listen`, forward each to `target` in both directions until either ends."""
    server = socket.create_server(listen, reuse_port=False)

    def pipe(src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
            try:
                s.shutdown(how)
            except OSError:
                pass

    def accept():
        while True:
            conn, _ = server.accept()
            try:
                upstream = socket.create_connection(target, timeout=10)
                upstream.settimeout(None)
            except OSError:
                conn.close()
                continue
            threading.Thread(target=pipe, args=(conn, upstream), daemon=True).start()
            threading.Thread(target=pipe, args=(upstream, conn), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()


def run(target, n, path):
    """N calls to `path` (GET with a query string, POST with a JSON body, alternately) on one keep-alive
    connection; returns (request id, status) of each."""
    conn = http.client.HTTPConnection(*target, timeout=10)
    done = []
    try:
        for i in range(n):
            rid = str(uuid.uuid4())
            headers = {"X-Request-Id": rid, "User-Agent": "interceptor-e2e/1"}
            if i % 2 == 0:
                conn.request("GET", f"{path}?item={i}", headers=headers)
            else:
                body = json.dumps({"id": rid, "item": i, "email": f"user{i}@example.com"})
                headers["Content-Type"] = "application/json"
                conn.request("POST", path, body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            done.append((rid, response.status))
    finally:
        conn.close()
    return done


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve", type=address)
    parser.add_argument("--control", type=address)
    parser.add_argument("--relay", type=relay_spec)
    parser.add_argument("--name", default="app")
    args = parser.parse_args()
    if not args.serve and not args.control:
        parser.error("--serve or --control (or both)")
    if args.relay:
        relay(*args.relay)
    Api.name = args.name
    servers = []
    if args.serve:
        servers.append(ThreadingHTTPServer(args.serve, Api))
    if args.control:
        servers.append(ThreadingHTTPServer(args.control, Control))
    for server in servers[1:]:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"{args.name}: serving {args.serve} control {args.control}", file=sys.stderr, flush=True)
    servers[0].serve_forever()


if __name__ == "__main__":
    main()
