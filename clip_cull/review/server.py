"""The review page's web server: Starlette routes behind a guard that lets only the user in.

The guard, on every request:
- the Host header must name the address and port served (a DNS-rebinding page gets 403);
- the request must carry the session token: in the URL once (`/?token=...`, which sets an
  HttpOnly, SameSite=Strict cookie) and in that cookie after; otherwise 403;
- a POST (the only requests that change anything) must also carry the page's CSRF token in a
  header, with a JSON body; GET never changes anything;
- every answer has a Content-Security-Policy allowing only this origin, and nothing is loaded
  from anywhere else.
Photos are served by their number in the ranking only: no path is ever read from a request.
"""

from __future__ import annotations

import html
import ipaddress
import json
import secrets
import socket
from dataclasses import dataclass, field
from importlib import resources
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from clip_cull.errors import ClipCullError
from clip_cull.images import UnreadableImage
from clip_cull.review.session import MAX_SEARCH_HITS, MoveIncomplete, ReviewSession
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
SHUTDOWN_GRACE_S = 3
MAX_BODY_BYTES = 64 * 1024  # a decision is a few dozen bytes of JSON
STATIC_TYPES = {"review.js": "text/javascript; charset=utf-8", "review.css": "text/css; charset=utf-8"}


@dataclass
class Access:
    """The secrets of one review session and the addresses it answers to."""

    host: str
    port: int
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    @property
    def cookie_name(self) -> str:
        return f"clipcull_review_{self.port}"  # cookies ignore ports: two reviews must not clash

    def url(self) -> str:
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{shown}:{self.port}/?token={self.token}"

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
            return await _with_headers(PlainTextResponse(refusal, status_code=403))(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + [
                    (k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _refusal(self, scope, headers: dict[str, str]) -> str | None:
        access = self.access
        if not access.host_allowed(headers.get("host")):
            return "forbidden: wrong Host header"
        url_token = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [None])[0]
        cookie_token = _cookie(headers.get("cookie", ""), access.cookie_name)
        # Either may hold it: a cookie left by an earlier review on the same port must not
        # lock out the new URL (the browser keeps session cookies until it closes).
        if not any(_same_secret(given, access.token) for given in (cookie_token, url_token)):
            return "forbidden: open the URL clipcull printed (it holds the access token)"
        if scope["method"] not in ("GET", "HEAD", "POST"):
            return "forbidden: method"
        if scope["method"] == "POST":
            return self._post_refusal(headers)
        return None

    def _post_refusal(self, headers: dict[str, str]) -> str | None:
        if not _same_secret(headers.get("x-csrf-token"), self.access.csrf):
            return "forbidden: missing or wrong CSRF token"
        if headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            return "forbidden: changes are JSON requests"
        # A browser names where a request comes from; only this page's own origin may change things.
        if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            return "forbidden: request from another site"
        origin = headers.get("origin")
        if origin is not None and not (origin.startswith("http://") and self.access.host_allowed(origin[len("http://"):])):
            return "forbidden: request from another origin"
        return None


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
            response.set_cookie(access.cookie_name, access.token, httponly=True, samesite="strict", path="/")
        return response

    def static_file(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in static:
            return PlainTextResponse("not found", status_code=404)
        return Response(static[name], media_type=STATIC_TYPES[name], headers={"cache-control": "no-cache"})

    def photos(request: Request) -> Response:
        return _json({"photos": session.listing(), "title": title, "pick_label": session.writer.pick_label})

    def image(request: Request) -> Response:
        size = request.path_params["size"]
        if size not in SIZES:
            return PlainTextResponse("not found", status_code=404)
        photo = session.photo(request.path_params["photo_id"])
        wanted = request.query_params.get("v")
        if photo is None or (wanted is not None and wanted != session.version(photo)):
            return PlainTextResponse("not found", status_code=404)
        try:
            data = session.image(photo.id, size)
        except (UnreadableImage, OSError) as e:
            reason = (e.strerror if isinstance(e, OSError) and e.strerror else str(e)) or type(e).__name__
            return PlainTextResponse(f"cannot show {photo.ranked.path}: {reason}", status_code=422)
        if data is None:
            return PlainTextResponse("not found", status_code=404)
        # Kept by the browser only under a URL naming the content (?v=): a bare id is another
        # photo in the next review on this port.
        cache = "private, max-age=31536000, immutable" if wanted else "private, no-cache"
        return Response(data, media_type="image/jpeg", headers={"cache-control": cache})

    def search(request: Request) -> Response:
        try:
            top = min(int(request.query_params.get("top", MAX_SEARCH_HITS)), MAX_SEARCH_HITS)
            if top < 0:
                raise ValueError(top)
            hits = session.search(request.query_params.get("q", ""), top)
        except ValueError:
            return _json({"error": "top must be a number, 0 or more"}, 400)
        except ClipCullError as e:
            return _json({"error": str(e)}, 400)
        return _json({"hits": hits})

    async def decide(request: Request) -> Response:
        try:
            body = await _body(request)
        except _TooLarge:
            return _json({"error": f"request body over {MAX_BODY_BYTES} bytes"}, 413)
        if body is None:
            return _json({"error": "bad request"}, 400)
        action, photo_id, value = body.get("action"), body.get("id"), body.get("value")
        if action not in ("stars", "reject", "clear", "pick") or not _is_int(photo_id) or (
                action == "stars" and not (_is_int(value) and 1 <= value <= 5)):
            return _json({"error": "bad request"}, 400)
        return await _changing(lambda: session.decide(photo_id, action, value))

    async def undo(request: Request) -> Response:
        return await _changing(lambda: session.undo() or {"nothing": True})

    async def move(request: Request) -> Response:
        def run():
            try:
                run_id, moved = session.move_rejects()
            except MoveIncomplete as e:  # the page must still drop the photos that went
                return _json({"error": str(e), "run": e.run_id, "moved": e.moved}, 409)
            return {"run": run_id, "moved": moved}
        return await _changing(run)

    routes = [
        Route("/", index, methods=["GET"]),
        Route("/static/{name}", static_file, methods=["GET"]),
        Route("/api/photos", photos, methods=["GET"]),
        Route("/img/{photo_id:int}/{size}", image, methods=["GET"]),
        Route("/api/search", search, methods=["GET"]),
        Route("/api/decide", decide, methods=["POST"]),
        Route("/api/undo", undo, methods=["POST"]),
        Route("/api/move-rejects", move, methods=["POST"]),
    ]
    return Guard(Starlette(routes=routes), access)


async def _changing(work) -> Response:
    """Run a change off the event loop; a file that cannot be written is one clear line."""
    from starlette.concurrency import run_in_threadpool

    try:
        result = await run_in_threadpool(work)
    except ClipCullError as e:
        return _json({"error": str(e)}, 409)
    except OSError as e:
        return _json({"error": f"{getattr(e, 'filename', '') or ''} {e.strerror or e}".strip()}, 409)
    if result is None:
        return _json({"error": "no such photo"}, 404)
    return result if isinstance(result, Response) else _json(result)


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


def serve(app, sock: socket.socket) -> None:
    """Serve until Ctrl-C (uvicorn handles the signal and returns)."""
    import uvicorn

    # Ctrl-C stops within seconds even while a client holds a request open.
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                            timeout_graceful_shutdown=SHUTDOWN_GRACE_S)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn raises the captured Ctrl-C again once it has stopped
        pass
