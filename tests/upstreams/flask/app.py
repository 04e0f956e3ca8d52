"""Real Flask/Werkzeug upstreams for tests/e2e_path_spellings.rs.

    python app.py MODE PORT     listens on 127.0.0.1:PORT, prints "ready PORT" on stdout

MODE is one of:

  flask    A Flask app with Werkzeug's default routing (strict_slashes and merge_slashes on,
           case-sensitive), served by Werkzeug's WSGI server, which percent-decodes the path into
           PATH_INFO as every WSGI server does (so `%2F` arrives as `/`). Method overrides follow
           the Flask documentation's pattern (`X-HTTP-Method-Override` on any method).

  servlet  The same Flask app behind an EMULATION of a Java servlet container's request-URI
           handling (Tomcat's CoyoteAdapter, which Jetty matches for these cases): from the raw
           request target, `;parameters` are cut from every segment, then it is percent-decoded
           as UTF-8 (an encoded `/`, a backslash, NUL or invalid UTF-8 is refused with 400), `//`
           collapses and `.`/`..` segments are resolved (above the root: 400). Matching is
           case-sensitive. No small Tomcat or Jetty installs from npm or PyPI, and a JVM would
           cost the test seconds, so this mode stands in for them; it is the only emulated part.

Routes (both modes):
  POST /v1/deployments/production  -> handler "protected" (the request behind the approval)
  POST /v1/deployments/<env>       -> handler "generic" (env as decoded by the router)
  anything else                    -> 404 (or Werkzeug's own redirect), handler "none"
  GET  /__hits                     -> {"protected": N, "log": [...]}, answered before routing
"""

import json
import sys
import threading
from urllib.parse import urlsplit

from flask import Flask, jsonify, request
from werkzeug.serving import make_server

LOG = []
LOCK = threading.Lock()
PROTECTED_HITS = [0]

app = Flask(__name__)


@app.post("/v1/deployments/production")
def protected():
    with LOCK:
        PROTECTED_HITS[0] += 1
    resp = jsonify(handler="protected", target=request.environ.get("RAW_URI"))
    resp.headers["X-Handler"] = "protected"
    return resp


@app.post("/v1/deployments/<env>")
def generic(env):
    request.environ["upstream.env"] = env
    resp = jsonify(handler="generic", env=env, target=request.environ.get("RAW_URI"))
    resp.headers["X-Handler"] = "generic"
    return resp


class HTTPMethodOverrideMiddleware:
    """The method-override pattern from Flask's documentation ("Adding HTTP Method Overrides")."""

    allowed_methods = frozenset(["GET", "HEAD", "POST", "DELETE", "PUT", "PATCH", "OPTIONS"])
    bodyless_methods = frozenset(["GET", "HEAD", "OPTIONS", "DELETE"])

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        method = environ.get("HTTP_X_HTTP_METHOD_OVERRIDE", "").upper()
        if method in self.allowed_methods:
            environ["REQUEST_METHOD"] = method
        if method in self.bodyless_methods:
            environ["CONTENT_LENGTH"] = "0"
        return self.app(environ, start_response)


class ServletPathMiddleware:
    """Emulates a servlet container's request-URI decoding (see the module docstring)."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        # Werkzeug reads the request line as latin-1, then stores it UTF-8 encoded in the WSGI
        # latin-1 "bytes as str" convention: undo both to get the bytes that were sent.
        raw = environ.get("RAW_URI", "").encode("latin-1").decode("utf-8").encode("latin-1")
        path = servlet_path(raw)
        if path is None:
            return bad_request(start_response)
        environ["PATH_INFO"] = path.decode("latin-1")
        return self.app(environ, start_response)


def servlet_path(raw):
    """The path a servlet container routes on, as bytes, or None for its 400."""
    if not raw.startswith(b"/"):  # absolute-form
        raw = urlsplit(raw).path
    raw = raw.split(b"?", 1)[0]
    # 1. Path parameters: `;...` up to the next `/`, in every segment (before decoding).
    raw = b"/".join(seg.split(b";", 1)[0] for seg in raw.split(b"/"))
    # 2. Percent-decoding; an encoded `/` is refused (Tomcat's default encodedSolidusHandling).
    out = bytearray()
    i = 0
    while i < len(raw):
        b = raw[i]
        if b == 0x25:  # %
            try:
                b = int(raw[i + 1 : i + 3], 16)
            except ValueError:
                return None
            if len(raw[i + 1 : i + 3]) != 2 or b == 0x2F:
                return None
            i += 3
        else:
            i += 1
        if b in (0x00, 0x5C):  # NUL, backslash (ALLOW_BACKSLASH is off by default)
            return None
        out.append(b)
    try:
        bytes(out).decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not out.startswith(b"/"):
        return None
    # 3. Normalisation: `//` collapses, `.` and `..` resolve; above the root is refused.
    segments = []
    parts = bytes(out).split(b"/")[1:]
    for n, seg in enumerate(parts):
        last = n == len(parts) - 1
        if seg == b"" and not last:
            continue
        if seg == b".":
            if last:
                segments.append(b"")
            continue
        if seg == b"..":
            if not segments:
                return None
            segments.pop()
            if last:
                segments.append(b"")
            continue
        segments.append(seg)
    return b"/" + b"/".join(segments)


def bad_request(start_response):
    body = json.dumps({"handler": "none", "error": "bad request"}).encode()
    start_response(
        "400 Bad Request",
        [("Content-Type", "application/json"), ("X-Handler", "none"),
         ("Content-Length", str(len(body)))],
    )
    return [body]


class RecordingMiddleware:
    """Answers GET /__hits and records every other request with the handler that answered."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        if environ.get("REQUEST_METHOD") == "GET" and environ.get("RAW_URI") == "/__hits":
            with LOCK:
                body = json.dumps({"protected": PROTECTED_HITS[0], "log": LOG}).encode()
            start_response("200 OK", [("Content-Type", "application/json"),
                                      ("Content-Length", str(len(body)))])
            return [body]
        wire_method = environ.get("REQUEST_METHOD")
        seen = {}

        def recording_start_response(status, headers, exc_info=None):
            seen["status"] = int(status.split(" ", 1)[0])
            seen["handler"] = next((v for k, v in headers if k.lower() == "x-handler"), "none")
            return start_response(status, headers, exc_info)

        result = self.app(environ, recording_start_response)
        with LOCK:
            LOG.append({
                "spelling": environ.get("HTTP_X_SPELLING"),
                "handler": seen.get("handler", "none"),
                "method": environ.get("REQUEST_METHOD"),
                "wire_method": wire_method,
                "target": environ.get("RAW_URI"),
                "path_info": environ.get("PATH_INFO"),
                "env": environ.get("upstream.env"),
                "host": environ.get("HTTP_HOST"),
                "approval": "HTTP_COUNTERSIGN_APPROVAL" in environ,
                "status": seen.get("status"),
            })
        return result


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("flask", "servlet"):
        sys.exit("usage: app.py flask|servlet PORT")
    mode, port = sys.argv[1], int(sys.argv[2])
    wsgi = HTTPMethodOverrideMiddleware(app.wsgi_app)
    if mode == "servlet":
        wsgi = ServletPathMiddleware(wsgi)
    app.wsgi_app = RecordingMiddleware(wsgi)
    server = make_server("127.0.0.1", port, app, threaded=True)
    print(f"ready {port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
