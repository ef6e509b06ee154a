#!/usr/bin/python3
"""A TCP proxy that emulates one network link and counts what crosses it.

    linkproxy.py --listen 127.0.0.1:0 --upstream 127.0.0.1:5000 --rate 100mbit \\
                 [--up-rate RATE] [--latency MS] [--stats FILE] [--log FILE]

Every connection accepted on --listen is forwarded, byte for byte, to --upstream (a
registry on loopback, say). All connections together share ONE link: a single token
bucket for the downstream direction (upstream -> client) and one for the upstream
direction, so two transfers at once each get about half the rate, as on a real line, and
no connection can take more than its turn (the bucket serves whole slices of at most a few
milliseconds of link time, first come first served). A client that reads slowly holds
nothing: its data waits in a bounded per-connection queue, and the proxy stops reading
from its upstream until the client catches up.

RATE: a number of bytes per second (12500000), or bits per second with a unit: 800kbit,
100mbit, 1gbit (decimal, as tc); 0 or "none" for no limit. --up-rate defaults to --rate.
--latency MS: a one-way delay added to each direction (a round trip costs 2 x MS more).

When listening, the port is printed on stdout (one line) so that a script can wait for it
and use --listen 127.0.0.1:0.

Counting: bytes forwarded each way, connections, and the HTTP/1.1 requests seen on each
client stream (keep-alive and pipelining aware: request line, Range header, body by
Content-Length or chunked). Responses are matched to requests in order, and the bytes
delivered to the client for each (head + body) are attributed to its request. A stream
that does not parse as HTTP is counted but not attributed.

--stats FILE is rewritten atomically (tmp + rename) every 100 ms when something changed,
and at exit (SIGTERM, SIGINT): JSON with "bytes_down", "bytes_up", "connections",
"requests" (the number), "request_list" (method, path, range, status, body and wire
bytes, times; the first --max-requests of them), and the link's parameters.
--log FILE gets one line per request when its response is complete (or the connection
ends):
    UNIXTIME METHOD PATH range=<Range or -> status=<N or -> bytes=<body bytes> wire=<head
    + body bytes> conn=<connection number> ms=<request to last byte> done=<yes, or no
    when the connection ended first>
"""

import argparse
import asyncio
import collections
import json
import os
import re
import signal
import socket
import sys
import time

RATE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?)\s*(bit|kbit|mbit|gbit|b/s|bytes/s)?\s*$",
                     re.IGNORECASE)
RATE_UNITS = {None: 1.0, "b/s": 1.0, "bytes/s": 1.0,
              "bit": 1 / 8, "kbit": 1e3 / 8, "mbit": 1e6 / 8, "gbit": 1e9 / 8}
QUEUE_CHUNKS = 64  # chunks buffered per direction of a connection (backpressure beyond)
MAX_HEAD = 64 * 1024  # a request or response head longer than this is not HTTP to us


def parse_rate(text):
    """RATE (see the module's help) -> bytes per second, or None for no limit."""
    if text.strip().lower() in ("0", "none", "unlimited"):
        return None
    m = RATE_RE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(
            "bad rate %r (want e.g. 100mbit, 800kbit, 1gbit or bytes per second)" % text)
    unit = m.group(2).lower() if m.group(2) else None
    rate = float(m.group(1)) * RATE_UNITS[unit]
    return rate if rate > 0 else None


def parse_addr(text):
    text = re.sub(r"^[a-z]+://", "", text).rstrip("/")
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError("want HOST:PORT, got %r" % text)
    return host.strip("[]") or "127.0.0.1", int(port)


class Bucket:
    """A token bucket shared by every connection in one direction. take(n) returns when the
    link has had time to carry n more bytes; callers are served first come first served
    (asyncio.Lock is FIFO), so concurrent connections alternate slice by slice."""

    def __init__(self, rate):
        self.rate = rate
        # Burst: 10 ms of link time, at least one slice, so that a request after an idle
        # moment does not wait but no more than a sliver passes at wire speed.
        self.burst = max(slice_size(rate), rate / 100) if rate else 0
        self.tokens = self.burst
        self.last = time.monotonic()
        self.lock = asyncio.Lock()

    async def take(self, n):
        if not self.rate:
            return
        async with self.lock:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
            self.last = now
            self.tokens -= n
            if self.tokens < 0:
                # Holding the lock while the debt is paid keeps the order of the queue.
                await asyncio.sleep(-self.tokens / self.rate)


def slice_size(rate):
    """Bytes read and sent at once: about 2 ms of link time, 4 to 64 KiB."""
    if not rate:
        return 64 * 1024
    return int(min(64 * 1024, max(4096, rate / 500)))


class Request:
    __slots__ = ("conn", "method", "path", "range", "status", "body", "wire", "start", "end",
                 "complete", "text")

    def __init__(self, conn, method, path, rng):
        self.conn, self.method, self.path, self.range = conn, method, path, rng
        self.status = None
        self.body = self.wire = 0
        self.start = time.time()
        self.end = None
        self.complete = False
        self.text = None  # the JSON of a finished request, made once

    def as_json(self):
        if self.text is not None:
            return self.text
        text = json.dumps({
            "conn": self.conn, "method": self.method, "path": self.path, "range": self.range,
            "status": self.status, "body_bytes": self.body, "wire_bytes": self.wire,
            "start": round(self.start, 6), "end": round(self.end, 6) if self.end else None,
            "complete": self.complete})
        if self.end is not None:
            self.text = text
        return text


def header_map(head):
    """The start line and a dict of lower-cased header names (last one wins) of a head."""
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        k, sep, v = line.partition(":")
        if sep:
            headers[k.strip().lower()] = v.strip()
    return lines[0], headers


class HttpStream:
    """An incremental parser of the HTTP/1.x messages of one direction of a connection.
    feed(data) calls on_head(start_line, headers) at each message head, which returns the
    body framing: ("length", N), ("chunked", None) or ("close", None); on_bytes(n, in_head)
    for every byte consumed. On anything it cannot parse it gives up (self.broken) and
    reports nothing more."""

    def __init__(self, on_head, on_bytes, on_end):
        self.on_head, self.on_bytes, self.on_end = on_head, on_bytes, on_end
        self.buf = b""
        self.state = "head"
        self.left = 0  # bytes left in the body (length) or the current chunk
        self.broken = False

    def feed(self, data):
        if self.broken:
            return
        try:
            self._feed(data)
        except (ValueError, UnicodeError):
            self.broken = True

    def _feed(self, data):
        data = self.buf + data
        self.buf = b""
        while data:
            if self.state == "head":
                head, data = self._take_until(data, b"\r\n\r\n")
                if head is None:
                    return
                self.on_bytes(len(head), True)
                kind, n = self.on_head(*header_map(head[:-4]))
                self._start_body(kind, n)
            elif self.state in ("body", "chunk"):
                k = len(data) if self.left < 0 else min(self.left, len(data))  # < 0: to EOF
                self.on_bytes(k, False)
                data = data[k:]
                if self.left > 0:
                    self.left -= k
                if self.left == 0:
                    if self.state == "body":
                        self._done()
                    else:
                        self.state = "chunk-crlf"
            else:  # chunk-size, chunk-crlf, trailer: line-based
                line, data = self._take_until(data, b"\r\n")
                if line is None:
                    return
                self.on_bytes(len(line), False)
                line = line[:-2]
                if self.state == "chunk-size":
                    size = int(line.split(b";")[0].strip(), 16)
                    if size == 0:
                        self.state = "trailer"
                    else:
                        self.state, self.left = "chunk", size
                elif self.state == "chunk-crlf":
                    if line:
                        raise ValueError("no CRLF after a chunk")
                    self.state = "chunk-size"
                elif not line:  # trailer ends with an empty line
                    self._done()

    def _take_until(self, data, sep):
        """(data up to and including sep, the rest); (None, b"") when sep is not there yet,
        keeping data for the next feed."""
        end = data.find(sep)
        if end < 0:
            if len(data) > MAX_HEAD:
                raise ValueError("head or line too long")
            self.buf = data
            return None, b""
        end += len(sep)
        return data[:end], data[end:]

    def _start_body(self, kind, n):
        if kind == "chunked":
            self.state = "chunk-size"
        elif kind == "close":
            self.state, self.left = "body", -1
        elif n:
            self.state, self.left = "body", n
        else:
            self._done()

    def _done(self):
        self.state = "head"
        self.on_end()


class Link:
    """The emulated link: both buckets, the counters, the stats file and the log."""

    def __init__(self, args):
        self.args = args
        self.down = Bucket(args.rate)
        self.up = Bucket(args.up_rate)
        self.latency = args.latency / 1000.0
        self.bytes_down = self.bytes_up = 0
        self.connections = self.active = self.upstream_errors = 0
        self.nrequests = 0
        self.request_list = []
        self.unattributed_down = 0
        self.started = time.time()
        self.generation = 0
        self.written = -1
        self.port = None
        self.logf = open(args.log, "a", buffering=1) if args.log else None

    def changed(self):
        self.generation += 1

    def new_request(self, req):
        self.nrequests += 1
        if len(self.request_list) < self.args.max_requests:
            self.request_list.append(req)
        self.changed()

    def finish_request(self, req, complete):
        if req.end is not None:
            return
        req.end = time.time()
        req.complete = complete
        self.changed()
        if self.logf:
            self.logf.write(
                "%.3f %s %s range=%s status=%s bytes=%d wire=%d conn=%d ms=%.1f done=%s\n" % (
                    req.end, req.method, req.path, (req.range or "-").replace(" ", ""),
                    req.status if req.status is not None else "-", req.body, req.wire,
                    req.conn, (req.end - req.start) * 1000, "yes" if complete else "no"))

    def stats_json(self):
        """The stats file's text: the counters, then one line per request."""
        a = self.args
        head = json.dumps({
            "listen": "%s:%s" % (a.listen[0], self.port), "upstream": "%s:%d" % a.upstream,
            "rate_down_bytes_per_s": a.rate, "rate_up_bytes_per_s": a.up_rate,
            "latency_ms": a.latency, "started": round(self.started, 3),
            "updated": round(time.time(), 3),
            "bytes_down": self.bytes_down, "bytes_up": self.bytes_up,
            "connections": self.connections, "active_connections": self.active,
            "upstream_errors": self.upstream_errors, "requests": self.nrequests,
            "unattributed_bytes_down": self.unattributed_down,
        }, indent=1)
        reqs = ",\n  ".join(r.as_json() for r in self.request_list)
        return '%s,\n "request_list": [%s%s%s]\n}\n' % (
            head[:-2], "\n  " if reqs else "", reqs, "\n " if reqs else "")

    def write_stats(self, force=False):
        if not self.args.stats or (self.written == self.generation and not force):
            return
        self.written = self.generation
        tmp = "%s.tmp.%d" % (self.args.stats, os.getpid())
        with open(tmp, "w") as f:
            f.write(self.stats_json())
        os.replace(tmp, self.args.stats)

    async def stats_loop(self):
        while True:
            await asyncio.sleep(0.1)
            self.write_stats()


class Connection:
    """One client connection and its upstream connection: per direction a pump (read, count
    the request heads, pay the bucket, queue) and a sender (wait the latency, write)."""

    def __init__(self, link, num, creader, cwriter):
        self.link, self.num = link, num
        self.creader, self.cwriter = creader, cwriter
        self.pending = collections.deque()  # requests whose response has not ended
        self.response = None  # the request whose response is being delivered
        self.requests = HttpStream(self._request_head, lambda n, h: None, lambda: None)
        self.responses = HttpStream(self._response_head, self._response_bytes,
                                    self._response_end)

    # --- HTTP bookkeeping --------------------------------------------------------------

    def _request_head(self, line, headers):
        parts = line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            raise ValueError("not an HTTP request line")
        req = Request(self.num, parts[0], parts[1], headers.get("range"))
        self.pending.append(req)
        self.link.new_request(req)
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return "chunked", None
        return "length", int(headers.get("content-length", "0") or 0)

    def _response_head(self, line, headers):
        parts = line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/"):
            raise ValueError("not an HTTP status line")
        status = int(parts[1])
        req = self.response
        if req is None:
            if not self.pending:
                raise ValueError("a response without a request")
            req = self.response = self.pending.popleft()
            req.wire += self._head_bytes
        else:  # a 1xx response earlier, same request
            req.wire += self._head_bytes
        req.status = status
        self._head_bytes = 0
        self.link.changed()
        if 100 <= status < 200:
            self._interim = True
            return "length", 0
        self._interim = False
        if req.method == "HEAD" or status in (204, 304):
            return "length", 0
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return "chunked", None
        if "content-length" in headers:
            return "length", int(headers["content-length"])
        return "close", None

    _head_bytes = 0
    _interim = False

    def _response_bytes(self, n, in_head):
        if in_head:
            self._head_bytes += n  # attributed when the head is parsed (just after)
        elif self.response is not None:
            self.response.body += n
            self.response.wire += n
            self.link.changed()

    def _response_end(self):
        if self._interim:
            return
        req, self.response = self.response, None
        if req is not None:
            self.link.finish_request(req, True)

    # --- forwarding -----------------------------------------------------------------------

    async def pump(self, reader, bucket, queue, parser):
        size = slice_size(bucket.rate)
        while True:
            data = await reader.read(size)
            if not data:
                await queue.put(None)
                return
            if parser is not None:
                parser.feed(data)
            await bucket.take(len(data))
            await queue.put((time.monotonic() + self.link.latency, data))

    async def send(self, writer, queue, downstream):
        link = self.link
        while True:
            item = await queue.get()
            if item is None:
                if writer.can_write_eof():
                    writer.write_eof()  # half-close: the other direction goes on
                return
            due, data = item
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
            if downstream:
                link.bytes_down += len(data)
                if self.responses.broken or self.requests.broken:
                    link.unattributed_down += len(data)
                else:
                    self.responses.feed(data)
            else:
                link.bytes_up += len(data)
            link.changed()

    async def run(self):
        link = self.link
        try:
            ureader, uwriter = await asyncio.open_connection(*link.args.upstream)
        except OSError as e:
            link.upstream_errors += 1
            link.changed()
            sys.stderr.write("linkproxy: conn %d: upstream %s:%d: %s\n" % (
                (self.num,) + link.args.upstream + (e,)))
            self.cwriter.transport.abort()
            return
        set_nodelay(uwriter)
        set_nodelay(self.cwriter)
        upq = asyncio.Queue(QUEUE_CHUNKS)
        downq = asyncio.Queue(QUEUE_CHUNKS)
        tasks = [
            asyncio.ensure_future(self.pump(self.creader, link.up, upq, self.requests)),
            asyncio.ensure_future(self.send(uwriter, upq, False)),
            asyncio.ensure_future(self.pump(ureader, link.down, downq, None)),
            asyncio.ensure_future(self.send(self.cwriter, downq, True)),
        ]
        clean = False
        try:
            # Both directions end (EOF passed on) or one breaks (reset, client gone).
            pending = set(tasks)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if any(t.exception() for t in done if not t.cancelled()):
                    break
            clean = not pending
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for w in (uwriter, self.cwriter):
                if clean:
                    w.close()  # after what is still buffered
                else:
                    w.transport.abort()
            # A response delimited by the end of the connection is complete when that end
            # was clean.
            if self.response is not None:
                link.finish_request(self.response, clean and self.responses.state == "body"
                                    and self.responses.left < 0 and not self.responses.broken)
            for req in self.pending:
                link.finish_request(req, False)


def set_nodelay(writer):
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


async def main_async(args):
    link = Link(args)
    counter = iter(range(1, 1 << 62))

    async def on_client(reader, writer):
        num = next(counter)
        link.connections += 1
        link.active += 1
        link.changed()
        try:
            await Connection(link, num, reader, writer).run()
        except Exception as e:  # one connection's trouble must not end the proxy
            sys.stderr.write("linkproxy: conn %d: %r\n" % (num, e))
            writer.transport.abort()
        finally:
            link.active -= 1
            link.changed()

    host, port = args.listen
    server = await asyncio.start_server(on_client, host, port, reuse_address=True)
    link.port = server.sockets[0].getsockname()[1]
    link.write_stats(force=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sys.stdout.write("%d\n" % link.port)
    sys.stdout.flush()
    stats_task = asyncio.ensure_future(link.stats_loop())
    try:
        await stop.wait()
    finally:
        stats_task.cancel()
        server.close()
        link.write_stats(force=True)
        if link.logf:
            link.logf.close()
            link.logf = None


def main():
    ap = argparse.ArgumentParser(description="Emulate one shared network link in front of a "
                                 "TCP server and count the bytes and HTTP requests crossing it.")
    ap.add_argument("--listen", type=parse_addr, default=("127.0.0.1", 0),
                    help="HOST:PORT to listen on (port 0: any free port; printed on stdout)")
    ap.add_argument("--upstream", type=parse_addr, required=True,
                    help="HOST:PORT to forward to (an http:// prefix is ignored)")
    ap.add_argument("--rate", type=parse_rate, default=None,
                    help="downstream rate: 100mbit, 800kbit, 1gbit or bytes/s (default: none)")
    ap.add_argument("--up-rate", type=parse_rate, default=None,
                    help="upstream (client -> server) rate (default: as --rate)")
    ap.add_argument("--latency", type=float, default=0.0,
                    help="one-way delay in ms added to each direction (default 0)")
    ap.add_argument("--stats", help="JSON stats file, rewritten every 100 ms and at exit")
    ap.add_argument("--log", help="one line per HTTP request is appended here")
    ap.add_argument("--max-requests", type=int, default=10000,
                    help="requests kept in the stats' request_list (default 10000)")
    args = ap.parse_args()
    if not any(a.startswith("--up-rate") for a in sys.argv[1:]):
        args.up_rate = args.rate
    if args.latency < 0:
        ap.error("--latency must not be negative")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
