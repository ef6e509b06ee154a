#!/usr/bin/python3
"""An HTTP reverse proxy with programmable faults, for testing registry clients.

    faultproxy.py --listen 127.0.0.1:PORT --upstream http://127.0.0.1:5000 \\
                  --rules rules.json --log requests.log

Every request is forwarded to the upstream (Host header and Range included, so Location
headers and partial reads work), unless a rule says otherwise. The rules file is a JSON
list, read again whenever its contents change (hit counters then start again at 0). For
each request the first rule that matches and still has budget applies:

  {"match": REGEX,      searched in "METHOD PATH?QUERY", e.g. "GET /v2/.*/blobs/"
   "times": N,          apply to N matching requests, then pass them through (default: all)
   "skip": M,           let the first M matching requests through untouched (default 0)
   "action": ..., params}

  "status"    answer with "status" (default 500) without asking upstream; "retry_after"
              adds a Retry-After header (use with 429/503)
  "cut"       forward, send the headers and the first "after" bytes of the body, then
              close the connection (the client sees a short body and may resume with Range)
  "corrupt"   forward, XOR one byte of the body at "offset" (default 4: the MTIME field of
              a gzip header, which decompressors ignore, so only the digest check can tell)
  "body"      answer 200 with the contents of "file", Content-Type "content_type", and a
              Docker-Content-Digest of those bytes (for oversized or odd manifests)
  "delay"     wait "seconds" and then forward
  "throttle"  forward, sending the body at "rate" bytes per second
  "close"     close the connection at once, before any byte of a response
  "cut_headers" forward, send the first "after" bytes of the response head (status line
              and headers, default 20), then close the connection
  "stall"     forward, send the headers and the first "after" bytes of the body, then
              send nothing more, keeping the connection open, for "seconds" (default 600)
  "length"    forward, but announce Content-Length = real length + "delta" (negative:
              shorter than the body, positive: longer); send the whole body, then close
  "long-content-length"
              forward, announce Content-Length = real length + "delta" (default 1000), send
              the real body, then send nothing more, keeping the connection open, for
              "seconds" (default 600): the client has every byte but waits for more
  "short-content-length"
              forward, announce Content-Length = real length - "delta" (default 1000), send
              only that many bytes, then keep the connection open for "seconds" (default
              600): the response is complete but the blob is not
  "extra-body" forward, append "extra" bytes (default 1000) of zeros to the body and announce
              the total in Content-Length: a body longer than the blob, honestly declared
  "endless"   forward the status and headers without Content-Length (the body then ends
              only when the connection closes), the body, then zero bytes without end
              (at most "limit" bytes in all, default 1 GiB)
  "redirect"  answer "status" (default 307) with Location "location", in which "{path}"
              stands for the request's path and query (a redirect loop: "{path}" on the
              proxy's own address)

One line per request is appended to --log when the response is done:
    UNIXTIME METHOD PATH range=<Range header or -> auth=<Authorization scheme or -> status=N
    action=<action or pass> bytes=<body bytes sent>
A "cut" or "corrupt" rule whose request the upstream answers with an error (say 401) is
not counted against "times" and the response passes unchanged.
Request bodies (pushes) are forwarded only with a Content-Length; chunked uploads are not
supported, so push fixtures to the registry directly.
"""

import argparse
import hashlib
import http.client
import json
import re
import select
import socket
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailers", "transfer-encoding", "upgrade"}
CHUNK = 64 * 1024


class Rules:
    """The rules file and the hit counter of each rule, shared by the handler threads."""

    def __init__(self, path):
        self.path = path
        self.lock = threading.Lock()
        self.text = None
        self.rules = []
        self.hits = []

    def _reload(self):
        try:
            with open(self.path) as f:
                text = f.read()
        except FileNotFoundError:
            text = "[]"
        if text == self.text:
            return
        try:
            rules = json.loads(text or "[]")
        except ValueError as e:
            sys.stderr.write("faultproxy: ignoring malformed rules file: %s\n" % e)
            return
        self.text = text
        self.rules = [dict(r, _re=re.compile(r["match"])) for r in rules]
        self.hits = [0] * len(self.rules)

    def pick(self, request_line):
        """The rule to apply to request_line, or None to pass it through."""
        with self.lock:
            self._reload()
            for i, rule in enumerate(self.rules):
                rule["_index"] = i
                if not rule["_re"].search(request_line):
                    continue
                self.hits[i] += 1
                n = self.hits[i] - rule.get("skip", 0)
                if n <= 0:
                    return None
                if "times" in rule and n > rule["times"]:
                    continue
                return rule
            return None

    def refund(self, rule):
        """Gives back the hit of a body fault that found no body to act on (the upstream
        answered an error, e.g. 401 before a token refresh), so that "times" counts the
        bodies actually cut or corrupted."""
        with self.lock:
            i = rule["_index"]
            if i < len(self.rules) and self.rules[i] is rule:
                self.hits[i] -= 1


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "imgfs-test-faultproxy"

    def handle(self):
        # A client that gives up (a killed pull) is not the proxy's error.
        try:
            super().handle()
        except (ConnectionResetError, BrokenPipeError):
            pass

    def log_message(self, fmt, *args):
        sys.stderr.write("faultproxy: " + fmt % args + "\n")

    def record(self, status, action, nbytes):
        auth = self.headers.get("Authorization", "-").split(" ")[0] or "-"
        rng = (self.headers.get("Range") or "-").replace(" ", "")
        line = "%.3f %s %s range=%s auth=%s status=%d action=%s bytes=%d\n" % (
            time.time(), self.command, self.path, rng, auth, status, action, nbytes)
        with self.server.log_lock, open(self.server.args.log, "a") as f:
            f.write(line)

    def handle_any(self):
        rule = self.server.rules.pick("%s %s" % (self.command, self.path))
        action = rule["action"] if rule else "pass"
        body = None
        length = self.headers.get("Content-Length")
        if length:
            body = self.rfile.read(int(length))
        elif self.headers.get("Transfer-Encoding"):
            self.send_error(501, "chunked request bodies are not supported")
            self.record(501, action, 0)
            return

        if action == "status":
            self.answer_status(rule)
            return
        if action == "body":
            self.answer_file(rule)
            return
        if action == "close":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            self.record(0, "close", 0)
            return
        if action == "redirect":
            self.answer_redirect(rule)
            return
        if action == "delay" and self.client_left(float(rule.get("seconds", 1))):
            # Logged now, not when the delay would have ended: a later test case that
            # counts requests must not see this one.
            self.close_connection = True
            self.record(0, "delay(client gone)", 0)
            return
        self.forward(rule, action, body)

    def answer_status(self, rule):
        status = int(rule.get("status", 500))
        data = json.dumps({"errors": [{"code": "UNAVAILABLE",
                                       "message": "injected fault %d" % status}]}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if "retry_after" in rule:
            self.send_header("Retry-After", str(rule["retry_after"]))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        self.record(status, "status", len(data))

    def answer_file(self, rule):
        with open(rule["file"], "rb") as f:
            data = f.read()
        self.send_response(200)
        self.send_header("Content-Type", rule.get("content_type", "application/octet-stream"))
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Docker-Content-Digest", "sha256:" + hashlib.sha256(data).hexdigest())
        self.end_headers()
        sent = 0
        if self.command != "HEAD":
            self.wfile.write(data)
            sent = len(data)
        self.record(200, "body", sent)

    def answer_redirect(self, rule):
        status = int(rule.get("status", 307))
        self.send_response(status)
        self.send_header("Location", rule["location"].replace("{path}", self.path))
        self.send_header("Content-Length", "0")
        self.end_headers()
        self.record(status, "redirect", 0)

    def cut_head(self, resp, rule):
        """Sends the first "after" bytes of the response head, then closes."""
        head = "HTTP/1.1 %d %s\r\n" % (resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in HOP_BY_HOP:
                head += "%s: %s\r\n" % (k, v)
        head = (head + "\r\n").encode("latin-1")[:int(rule.get("after", 20))]
        self.wfile.write(head)
        self.wfile.flush()
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)
        self.record(resp.status, "cut_headers", 0)

    def client_left(self, seconds):
        """Waits seconds; True as soon as the client has closed its connection."""
        end = time.monotonic() + seconds
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return False
            if not select.select([self.connection], [], [], left)[0]:
                continue
            try:
                if self.connection.recv(1, socket.MSG_PEEK) == b"":
                    return True
            except OSError:
                return True
            # Bytes of a next request: nothing more to learn from the socket.
            time.sleep(max(0.0, end - time.monotonic()))
            return False

    def stall(self, seconds):
        """Sends nothing for seconds, or until the client closes the connection."""
        self.wfile.flush()
        end = time.monotonic() + seconds
        self.connection.settimeout(0.2)
        while time.monotonic() < end:
            try:
                if self.connection.recv(4096) == b"":
                    break
            except socket.timeout:
                continue
            except OSError:
                break
        self.close_connection = True

    def upstream(self):
        u = self.server.upstream
        if u.scheme == "https":
            return http.client.HTTPSConnection(u.hostname, u.port or 443, timeout=60,
                                               context=ssl._create_unverified_context())
        return http.client.HTTPConnection(u.hostname, u.port or 80, timeout=60)

    def forward(self, rule, action, body):
        conn = self.upstream()
        try:
            # Header by header: a client may repeat one (Accept), which a dict would lose.
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for k, v in self.headers.items():
                if k.lower() not in HOP_BY_HOP:
                    conn.putheader(k, v)
            conn.endheaders(body)
            resp = conn.getresponse()
        except OSError as e:
            self.send_error(502, "upstream: %s" % e)
            self.record(502, action, 0)
            return
        try:
            self.relay(resp, rule, action)
        finally:
            conn.close()

    def relay(self, resp, rule, action):
        if action in ("cut", "corrupt", "cut_headers", "stall", "length", "endless",
                      "long-content-length", "short-content-length", "extra-body") and \
                not 200 <= resp.status < 300:
            self.server.rules.refund(rule)
            rule, action = None, "pass"
        if action == "cut_headers":
            self.cut_head(resp, rule)
            return
        length = resp.getheader("Content-Length")
        if self.command == "HEAD" or resp.status in (204, 304):
            data = b""
            length = length or "0"
        elif length is None:
            data = resp.read()
            length = str(len(data))
        else:
            data = None  # streamed below
        short = None
        if action == "short-content-length":
            short = max(0, int(length) - int(rule.get("delta", 1000)))
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                self.send_header(k, v)
        if self.command == "HEAD" and resp.getheader("Content-Length") is not None:
            self.send_header("Content-Length", resp.getheader("Content-Length"))
        elif action == "length":
            self.send_header("Content-Length", str(max(0, int(length) + int(rule["delta"]))))
            self.close_connection = True
        elif action == "endless":
            self.close_connection = True
        elif action == "long-content-length":
            self.send_header("Content-Length", str(int(length) + int(rule.get("delta", 1000))))
        elif action == "short-content-length":
            self.send_header("Content-Length", str(short))
        elif action == "extra-body":
            self.send_header("Content-Length", str(int(length) + int(rule.get("extra", 1000))))
        elif self.command != "HEAD":
            self.send_header("Content-Length", length)
        self.end_headers()

        if action == "endless" and self.command != "HEAD":
            self.send_endless(resp, data, int(rule.get("limit", 1 << 30)))
            return
        cut = int(rule.get("after", 0)) if action in ("cut", "stall") else None
        if short is not None and self.command != "HEAD":
            cut = short
        hold = action in ("stall", "long-content-length", "short-content-length")
        rate = float(rule.get("rate", 1 << 20)) if action == "throttle" else None
        corrupt_at = int(rule.get("offset", 4)) if action == "corrupt" else None
        step = max(1024, min(CHUNK, int(rate / 20))) if rate else CHUNK
        sent = 0
        start = time.monotonic()
        try:
            while True:
                if data is not None:
                    chunk, data = data, b""
                else:
                    chunk = resp.read(step)
                if not chunk:
                    break
                if corrupt_at is not None and sent <= corrupt_at < sent + len(chunk):
                    i = corrupt_at - sent
                    chunk = chunk[:i] + bytes([chunk[i] ^ 0xFF]) + chunk[i + 1:]
                if cut is not None and sent + len(chunk) >= cut:
                    self.wfile.write(chunk[:cut - sent])
                    sent = cut
                    if hold:
                        self.stall(float(rule.get("seconds", 600)))
                        self.record(resp.status, action, sent)
                        return
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.record(resp.status, "cut", sent)
                    return
                self.wfile.write(chunk)
                sent += len(chunk)
                if rate:
                    ahead = sent / rate - (time.monotonic() - start)
                    if ahead > 0:
                        time.sleep(ahead)
            if action == "extra-body":
                self.wfile.write(bytes(int(rule.get("extra", 1000))))
                sent += int(rule.get("extra", 1000))
            if action == "long-content-length":
                self.stall(float(rule.get("seconds", 600)))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            self.record(resp.status, action + "(client gone)", sent)
            return
        self.record(resp.status, action, sent)

    def send_endless(self, resp, data, limit):
        sent = 0
        zeros = bytes(CHUNK)
        try:
            while sent < limit:
                if data is not None:
                    chunk, data = data, b""
                else:
                    chunk = resp.read(CHUNK) if not resp.isclosed() else b""
                chunk = (chunk or zeros)[:limit - sent]
                self.wfile.write(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            self.record(resp.status, "endless(client gone)", sent)
            return
        self.record(resp.status, "endless", sent)

    do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = handle_any


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen", required=True, help="HOST:PORT")
    p.add_argument("--upstream", required=True, help="http[s]://HOST:PORT")
    p.add_argument("--rules", required=True, help="JSON rules file (see above)")
    p.add_argument("--log", required=True, help="append one line per request")
    args = p.parse_args()
    host, _, port = args.listen.rpartition(":")
    server = ThreadingHTTPServer((host, int(port)), Handler)
    server.daemon_threads = True
    server.args = args
    server.upstream = urlsplit(args.upstream)
    server.rules = Rules(args.rules)
    server.log_lock = threading.Lock()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
