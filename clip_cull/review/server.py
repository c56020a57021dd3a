"""The review page's web server: Starlette routes behind a guard that lets only the user in.

The guard, on every request:
- the Host header must name the address and port served (a DNS-rebinding page gets 403);
- the path must be under this review's random prefix (`/r/<random>/`), else 404: browsers send
  a cookie of 127.0.0.1 to every server on 127.0.0.1 whatever its port, but only to paths under
  the cookie's Path, so another local server never receives one that opens this review;
- the request must carry the session token: in the URL once (`/r/<random>/?token=...`, which sets
  an HttpOnly, SameSite=Strict cookie for that path) and in that cookie after; otherwise 403;
- a POST (every request that changes anything, search included: it keeps the text's embedding in
  the cache) must also carry the page's CSRF token in a header, with a JSON body, from this origin;
- a GET from another site's page (Sec-Fetch-Site cross-site or same-site, i.e. an <img> or a
  link on any other page, another port of this machine included) is refused, except a navigation
  to the page itself (a link, the redirect file the browser is opened with);
- every answer has a Content-Security-Policy allowing only this origin, and nothing is loaded
  from anywhere else.
Photos are served by their number in the ranking only: no path is ever read from a request.
"""

from __future__ import annotations

import html
import ipaddress
import json
import os
import re
import secrets
import signal
import socket
from dataclasses import dataclass, field
from importlib import resources
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from clip_cull.core.errors import ClipCullError
from clip_cull.core.images import UnreadableImage
from clip_cull.review.decisions import COLOURS
from clip_cull.review.session import MAX_SEARCH_HITS, ChangedSinceShown, MoveIncomplete, ReviewSession
from clip_cull.review.thumbs import SIZES

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-resource-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
}
SHUTDOWN_GRACE_S = 0.5  # in-flight requests get this long once Ctrl-C is pressed
MAX_BODY_BYTES = 64 * 1024  # a decision is a few dozen bytes of JSON
STATIC_TYPES = {"review.js": "text/javascript; charset=utf-8", "review.css": "text/css; charset=utf-8"}


@dataclass
class Access:
    """The secrets of one review session and the addresses it answers to."""

    host: str
    port: int
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    prefix: str = field(default_factory=lambda: "/r/" + secrets.token_urlsafe(16))  # every path is under it

    @property
    def cookie_name(self) -> str:
        return f"clipcull_review_{self.port}"  # cookies ignore ports: two reviews must not clash

    def url(self) -> str:
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{shown}:{self.port}{self.prefix}/?token={self.token}"

    @property
    def page_path(self) -> str:
        return self.prefix + "/"

    def under_prefix(self, path: str) -> bool:
        head = path[:len(self.page_path)].encode("utf-8", "replace")
        return secrets.compare_digest(head, self.page_path.encode())

    def host_allowed(self, header: str | None) -> bool:
        """The Host header names this server: its own address (or localhost for loopback),
        with the port. A wildcard bind accepts IP literals only, never a DNS name."""
        if not header:
            return False
        name, _, port = header.rpartition(":")
        if port != str(self.port):
            return False
        name = name.strip("[]").lower()
        if name == self.host.lower():
            return True
        if _is_loopback(self.host):
            return name in ("localhost", "127.0.0.1", "::1")
        if self.host in ("0.0.0.0", "::"):
            return _is_ip(name)
        return False


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _is_loopback(host: str) -> bool:
    return host == "localhost" or (_is_ip(host) and ipaddress.ip_address(host).is_loopback)


class Guard:
    """ASGI middleware: Host check, token (URL once, then cookie), CSRF on POST, security headers."""

    def __init__(self, app, access: Access):
        self.app = app
        self.access = access

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = self._refusal(scope, headers)
        if refusal:
            status, text = refusal
            return await _with_headers(PlainTextResponse(text, status_code=status))(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + [
                    (k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _refusal(self, scope, headers: dict[str, str]) -> tuple[int, str] | None:
        access = self.access
        if not access.host_allowed(headers.get("host")):
            return 403, "forbidden: wrong Host header"
        if not access.under_prefix(scope.get("path", "")):
            return 404, "not found: this review's pages are under the path of the URL clipcull printed"
        url_token = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [None])[0]
        cookie_token = _cookie(headers.get("cookie", ""), access.cookie_name)
        # Either may hold it: a cookie left by an earlier review on the same port must not
        # lock out the new URL (the browser keeps session cookies until it closes).
        if not any(_same_secret(given, access.token) for given in (cookie_token, url_token)):
            return 403, "forbidden: open the URL clipcull printed (it holds the access token)"
        if scope["method"] not in ("GET", "HEAD", "POST"):
            return 403, "forbidden: method"
        refusal = self._post_refusal(headers) if scope["method"] == "POST" else self._get_refusal(scope, headers)
        return (403, refusal) if refusal else None

    def _get_refusal(self, scope, headers: dict[str, str]) -> str | None:
        """Another site's page may link to the review page, nothing more: an image or any other
        GET it makes is refused (images are made and kept in the cache on first request)."""
        if _from_this_site(headers):
            return None
        if headers.get("sec-fetch-mode") == "navigate" and scope.get("path") == self.access.page_path:
            return None
        return "forbidden: request from another site"

    def _post_refusal(self, headers: dict[str, str]) -> str | None:
        if not _same_secret(headers.get("x-csrf-token"), self.access.csrf):
            return "forbidden: missing or wrong CSRF token"
        if headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            return "forbidden: changes are JSON requests"
        if not _from_this_site(headers):
            return "forbidden: request from another site"
        origin = headers.get("origin")
        if origin is not None and not (origin.startswith("http://") and self.access.host_allowed(origin[len("http://"):])):
            return "forbidden: request from another origin"
        return None


def _from_this_site(headers: dict[str, str]) -> bool:
    """A browser names where a request comes from: this page's own origin, or the user (typed,
    bookmarked); another port of this machine is "same-site", another site's page "cross-site"."""
    return headers.get("sec-fetch-site", "same-origin") in ("same-origin", "none")


def _same_secret(given: str | None, secret: str) -> bool:
    return bool(given) and secrets.compare_digest(given.encode("utf-8", "replace"), secret.encode())


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


def _with_headers(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response


def _static(name: str) -> bytes:
    return resources.files("clip_cull.review").joinpath("static", name).read_bytes()


def build_app(session: ReviewSession, access: Access, title: str) -> Guard:
    page_template = _static("index.html").decode("utf-8")
    static = {name: _static(name) for name in STATIC_TYPES}

    def index(request: Request) -> Response:
        page = page_template.replace("{{CSRF}}", html.escape(access.csrf)).replace("{{TITLE}}", html.escape(title))
        response = Response(page, media_type="text/html; charset=utf-8", headers={"cache-control": "no-store"})
        if request.query_params.get("token"):
            # Path: the browser sends it to this review's paths only, never to another server on this machine
            response.set_cookie(access.cookie_name, access.token, httponly=True, samesite="strict",
                                path=access.page_path)
        return response

    def static_file(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in static:
            return PlainTextResponse("not found", status_code=404)
        return Response(static[name], media_type=STATIC_TYPES[name], headers={"cache-control": "no-cache"})

    def photos(request: Request) -> Response:
        # every photo and sidecar checked on disk: a reload shows what is there now
        return _json({**session.changes(), "title": title, "pick_label": session.writer.pick_label})

    def changes(request: Request) -> Response:
        since = request.query_params.get("since", "")
        if not re.fullmatch(r"[0-9]{1,18}", since):
            return _json({"error": "since must be a rev the page was handed"}, 400)
        return _json(session.changes(int(since)))

    def image(request: Request) -> Response:
        size = request.path_params["size"]
        if size not in SIZES:
            return PlainTextResponse("not found", status_code=404)
        return _image(request, lambda photo: session.image(photo.id, size))

    def face(request: Request) -> Response:
        return _image(request, lambda photo: session.face(photo.id, request.path_params["index"]))

    def _image(request: Request, load) -> Response:
        """An image of a ranked photo, by its number; ?v= the content it must be of."""
        photo = session.check(request.path_params["photo_id"])
        wanted = request.query_params.get("v")
        if photo is None:
            return PlainTextResponse("not found", status_code=404)
        if wanted is not None and wanted != session.version(photo):
            # never the new content under the old version's URL (the browser keeps those for good)
            return PlainTextResponse(f"{os.path.basename(photo.ranked.path)} changed on disk since it was shown",
                                     status_code=404)
        try:
            data = load(photo)
        except (UnreadableImage, OSError) as e:
            reason = (e.strerror if isinstance(e, OSError) and e.strerror else str(e)) or type(e).__name__
            return PlainTextResponse(f"cannot show {photo.ranked.path}: {reason}", status_code=422)
        if data is None:
            return PlainTextResponse("not found", status_code=404)
        # Kept by the browser only under a URL naming the content (?v=): a bare id is another
        # photo in the next review on this port, or after the photo is replaced.
        cache = "private, max-age=31536000, immutable" if wanted else "private, no-cache"
        return Response(data, media_type="image/jpeg", headers={"cache-control": cache})

    def info(request: Request) -> Response:
        photo = session.check(request.path_params["photo_id"])
        if photo is None:
            return _json({"error": "no such photo"}, 404)
        try:
            facts = session.info(photo.id)
        except (UnreadableImage, OSError) as e:
            return _json({"error": f"cannot read {os.path.basename(photo.ranked.path)}: "
                                   f"{(e.strerror if isinstance(e, OSError) else None) or e}"}, 422)
        return _json(facts) if facts is not None else _json({"error": "no such photo"}, 404)

    async def search(request: Request) -> Response:
        body = await _json_object(request)
        if isinstance(body, Response):
            return body
        query, top = body.get("q"), body.get("top", MAX_SEARCH_HITS)
        if not isinstance(query, str):
            return _json({"error": "bad request: q is the text to search for"}, 400)
        if not _is_int(top) or top < 0:
            return _json({"error": "top must be a number, 0 or more"}, 400)
        try:
            hits = await run_in_threadpool(session.search, query, min(top, MAX_SEARCH_HITS))
        except ClipCullError as e:
            return _json({"error": str(e)}, 400)
        return _json({"hits": hits})

    async def decide(request: Request) -> Response:
        body = await _json_object(request)
        if isinstance(body, Response):
            return body
        action, photo_id, value = body.get("action"), body.get("id"), body.get("value")
        version, gen = body.get("v"), body.get("gen")
        if action not in ("stars", "reject", "clear", "pick", "colour") or not _is_int(photo_id) or (
                action == "stars" and not (_is_int(value) and 1 <= value <= 5)) or (
                action == "colour" and value not in COLOURS):
            return _json({"error": "bad request"}, 400)
        if not _is_int(gen) or not (version is None or isinstance(version, str)):
            return _json({"error": "bad request: a decision names the version (v, gen) of the photo shown"}, 400)
        client = body.get("client")
        if not _is_client(client):
            return _json({"error": "bad request: client is the page's id"}, 400)
        return await _changing(lambda: session.decide(photo_id, action, value, shown=(version, gen), client=client))

    async def undo(request: Request) -> Response:
        body = await _json_object(request)
        if isinstance(body, Response):
            return body
        client, earlier = body.get("client"), body.get("earlier", [])
        if not _is_client(client) or not isinstance(earlier, list) or len(earlier) > 16 or not all(
                isinstance(e, str) and _is_client(e) for e in earlier):
            return _json({"error": "bad request: client is the page's id, earlier its earlier loads'"}, 400)
        return await _changing(lambda: session.undo(client, earlier) or {"nothing": True})

    async def move(request: Request) -> Response:
        body = await _json_object(request)
        if isinstance(body, Response):
            return body
        since = body.get("since", -1)  # the rev the page has seen: rows changed after it come back
        if not _is_int(since):
            return _json({"error": "bad request: since is a rev the page was handed"}, 400)

        def run():
            try:
                run_id, moved = session.move_rejects()
            except MoveIncomplete as e:  # the page must still drop the photos that went
                return _json({"error": str(e), "run": e.run_id, "moved": e.moved}, 409)
            return {"run": run_id, "moved": moved, "changed": session.changes(since)["photos"]}
        return await _changing(run)

    base = access.prefix
    routes = [
        Route(f"{base}/", index, methods=["GET"]),
        Route(f"{base}/static/{{name}}", static_file, methods=["GET"]),
        Route(f"{base}/api/photos", photos, methods=["GET"]),
        Route(f"{base}/api/changes", changes, methods=["GET"]),
        Route(f"{base}/img/{{photo_id:int}}/{{size}}", image, methods=["GET"]),
        Route(f"{base}/face/{{photo_id:int}}/{{index:int}}", face, methods=["GET"]),
        Route(f"{base}/api/info/{{photo_id:int}}", info, methods=["GET"]),
        Route(f"{base}/api/search", search, methods=["POST"]),
        Route(f"{base}/api/decide", decide, methods=["POST"]),
        Route(f"{base}/api/undo", undo, methods=["POST"]),
        Route(f"{base}/api/move-rejects", move, methods=["POST"]),
    ]
    return Guard(Starlette(routes=routes), access)


async def _changing(work) -> Response:
    """Run a change off the event loop; a file that cannot be written is one clear line."""
    try:
        result = await run_in_threadpool(work)
    except ChangedSinceShown as e:  # the page shows the photo as it is now, and says so
        return _json({"error": str(e), "photo": e.row}, 409)
    except ClipCullError as e:
        return _json({"error": str(e)}, 409)
    except OSError as e:
        return _json({"error": f"{getattr(e, 'filename', '') or ''} {e.strerror or e}".strip()}, 409)
    except (ArithmeticError, ValueError) as e:  # a sidecar holding what no reader expected (1e999)
        return _json({"error": f"{type(e).__name__}: {e}"}, 409)
    if result is None:
        return _json({"error": "no such photo"}, 404)
    return result if isinstance(result, Response) else _json(result)


async def _json_object(request: Request) -> dict | Response:
    """The request's JSON object, or the answer refusing it."""
    try:
        body = await _body(request)
    except _TooLarge:
        return _json({"error": f"request body over {MAX_BODY_BYTES} bytes"}, 413)
    return _json({"error": "bad request"}, 400) if body is None else body


class _TooLarge(Exception):
    pass


async def _body(request: Request) -> dict | None:
    """The request's JSON object, None for anything else; raises _TooLarge past MAX_BODY_BYTES,
    read no further (a chunked body has no Content-Length to check first)."""
    length = request.headers.get("content-length", "0")
    if not length.isdigit() or int(length) > MAX_BODY_BYTES:
        raise _TooLarge
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_BODY_BYTES:
            raise _TooLarge
    try:
        body = json.loads(bytes(data))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return body if isinstance(body, dict) else None


def _is_client(value) -> bool:
    """A page's id (each tab of the review has its own), or None (a client that names none)."""
    return value is None or (isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9_-]{1,64}", value) is not None)


def _is_int(value) -> bool:
    return type(value) is int  # JSON true/false are ints to Python, 3.0 is a float: neither is an id or stars


def _json(data, status: int = 200) -> Response:
    return JSONResponse(data, status_code=status, headers={"cache-control": "no-store"})


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: any free one); raises OSError."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    return sock


def serve(app, sock: socket.socket, on_stop=None) -> bool:
    """Serve until Ctrl-C (or SIGTERM); True when a signal stopped it. on_stop() is called from
    the signal handler, at once: whatever waits (a search for the model) can stop waiting
    before uvicorn's graceful shutdown waits for it."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            if on_stop is not None:
                on_stop()
            super().handle_exit(sig, frame)

    # Ctrl-C stops within a second even while a client holds a request open.
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                            timeout_graceful_shutdown=SHUTDOWN_GRACE_S)
    server = Server(config)
    previous = signal.signal(signal.SIGTERM, _terminated)  # uvicorn raises the signal again once stopped
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn raises the captured Ctrl-C again once it has stopped
        return True
    finally:
        signal.signal(signal.SIGTERM, previous)
    return server.should_exit  # an older uvicorn returns without raising the signal again


def _terminated(sig, frame) -> None:
    raise KeyboardInterrupt
