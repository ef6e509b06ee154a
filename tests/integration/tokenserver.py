#!/usr/bin/python3
"""A small Docker registry token server, for tests (Python standard library + openssl).

Implements the token endpoint that docker-registry's `auth: token:` mode sends clients to:

    GET /token?service=S&scope=repository:NAME:pull,push[&scope=...]
    -> 200 {"token": JWT, "access_token": JWT, "expires_in": N, "issued_at": ...}

The JWT is signed RS256 by `openssl dgst -sha256 -sign KEY`. Its header carries the
signing certificate in "x5c", so the registry's rootcertbundle only has to contain that
(self-signed) certificate. The "access" claim grants every requested action of every
requested scope (the registry itself checks them against the request).

docker-registry (distribution 2.8) accepts a token up to 60 s after its "exp" (clock-skew
leeway). So that a token really stops working after --expires-in seconds, "exp" is set to
issue time + expires_in - leeway (--registry-leeway, default 60); "expires_in" in the
response is the real lifetime, as a client should use it.

With --user/--password, requests must carry those Basic credentials; otherwise (or with
wrong ones) the answer is 401. Without them, anonymous tokens are issued.

GET /health answers 200. Every token request is logged to --log as one line:
"<time> <status> user=<user or -> scope=<scopes> expires_in=<n>".
"""

import argparse
import base64
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def cert_der_b64(pem_path):
    """The DER certificate of a PEM file, base64 (standard alphabet, as x5c wants)."""
    with open(pem_path) as f:
        lines = f.read().splitlines()
    begin = lines.index("-----BEGIN CERTIFICATE-----")
    end = lines.index("-----END CERTIFICATE-----")
    return "".join(lines[begin + 1:end])


def parse_scope(scope):
    """'repository:a/b:pull,push' -> {"type", "name", "actions"}; None when malformed.
    The name may contain ':' (a registry host with port), so split type first, actions
    last."""
    typ, sep, rest = scope.partition(":")
    name, sep2, actions = rest.rpartition(":")
    if not sep or not sep2 or not typ or not name:
        return None
    return {"type": typ, "name": name, "actions": [a for a in actions.split(",") if a]}


class TokenServer:
    def __init__(self, args):
        self.args = args
        self.x5c = cert_der_b64(args.cert)
        self.log_lock = threading.Lock()

    def sign(self, claims):
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        signing_input = (b64url(json.dumps(header, separators=(",", ":")).encode()) + "." +
                         b64url(json.dumps(claims, separators=(",", ":")).encode()))
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", self.args.key],
                             input=signing_input.encode(), stdout=subprocess.PIPE,
                             check=True).stdout
        return signing_input + "." + b64url(sig)

    def issue(self, user, scopes, service):
        now = int(time.time())
        ttl = self.args.expires_in
        claims = {
            "iss": self.args.issuer,
            "sub": user or "",
            "aud": service,
            "iat": now,
            "nbf": now - 1,
            "exp": now + ttl - self.args.registry_leeway,
            "jti": uuid.uuid4().hex,
            "access": scopes,
        }
        return self.sign(claims), ttl, now

    def log(self, line):
        if not self.args.log:
            return
        with self.log_lock, open(self.args.log, "a") as f:
            f.write("%.3f %s\n" % (time.time(), line))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "imgfs-test-tokenserver"

    def log_message(self, fmt, *args):
        sys.stderr.write("tokenserver: " + fmt % args + "\n")

    def reply(self, status, body, headers=()):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def basic_user(self):
        """(user, password) from a Basic Authorization header, or (None, None)."""
        auth = self.headers.get("Authorization", "")
        if not auth.lower().startswith("basic "):
            return None, None
        try:
            user, _, password = base64.b64decode(auth[6:].strip()).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None, None
        return user, password

    def do_GET(self):
        ts = self.server.tokens
        url = urlsplit(self.path)
        if url.path == "/health":
            self.reply(200, {"ok": True})
            return
        if url.path != "/token":
            self.reply(404, {"errors": [{"code": "NOT_FOUND", "message": "no such endpoint"}]})
            return
        query = parse_qs(url.query)
        service = query.get("service", [""])[0]
        scope_args = [s for arg in query.get("scope", []) for s in arg.split(" ") if s]
        scopes = [parse_scope(s) for s in scope_args]
        user, password = self.basic_user()
        line = "user=%s scope=%s" % (user or "-", ",".join(scope_args) or "-")

        if service != ts.args.service:
            ts.log("400 " + line + " (wrong service %r)" % service)
            self.reply(400, {"errors": [{"code": "DENIED", "message": "unknown service"}]})
            return
        if None in scopes:
            ts.log("400 " + line + " (malformed scope)")
            self.reply(400, {"errors": [{"code": "DENIED", "message": "malformed scope"}]})
            return
        if ts.args.user is not None:
            if user != ts.args.user or password != ts.args.password:
                ts.log("401 " + line)
                self.reply(401, {"errors": [{"code": "UNAUTHORIZED",
                                             "message": "authentication required"}]},
                           [("WWW-Authenticate", 'Basic realm="imgfs-test-token"')])
                return
        token, ttl, now = ts.issue(user, scopes, service)
        ts.log("200 " + line + " expires_in=%d" % ttl)
        self.reply(200, {
            "token": token,
            "access_token": token,
            "expires_in": ttl,
            "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        })


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen", required=True, help="HOST:PORT")
    p.add_argument("--key", required=True, help="PEM private key (RSA) to sign with")
    p.add_argument("--cert", required=True, help="PEM certificate of that key (for x5c)")
    p.add_argument("--issuer", required=True)
    p.add_argument("--service", required=True)
    p.add_argument("--expires-in", type=int, default=300, help="token lifetime, seconds")
    p.add_argument("--registry-leeway", type=int, default=60,
                   help="seconds the registry accepts a token after exp")
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--log", help="append one line per token request")
    args = p.parse_args()
    if (args.user is None) != (args.password is None):
        p.error("--user and --password go together")
    host, _, port = args.listen.rpartition(":")
    server = ThreadingHTTPServer((host, int(port)), Handler)
    server.daemon_threads = True
    server.tokens = TokenServer(args)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
