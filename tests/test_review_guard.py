"""The review server's guard and request checks as a hostile client meets them, in process
(Starlette's TestClient: no socket, no network), against a stand-in session that records what
would have changed. The real server, end to end, is in test_review.py."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest
from starlette.testclient import TestClient

from clip_cull.review.server import MAX_BODY_BYTES, Access, build_app

PORT = 8765
ORIGIN = f"http://127.0.0.1:{PORT}"


@dataclass
class StandInSession:
    """What build_app uses of a ReviewSession; `decided` lists the changes asked for."""

    decided: list = field(default_factory=list)
    searched: list = field(default_factory=list)
    writer: SimpleNamespace = field(default_factory=lambda: SimpleNamespace(pick_label="Green"))
    photos: list = field(default_factory=lambda: [SimpleNamespace(id=0, fingerprint="ab" * 32,
                                                                   ranked=SimpleNamespace(path="/p/a.jpg"))])

    def listing(self):
        return [{"id": 0, "v": self.version(self.photos[0]), "gen": 0, "rev": 1, "name": "a.jpg"}]

    def changes(self, since=-1):
        return {"photos": [r for r in self.listing() if r["rev"] > since], "rev": 1}

    def photo(self, photo_id):
        return self.photos[photo_id] if 0 <= photo_id < len(self.photos) else None

    check = photo

    @staticmethod
    def version(photo):
        return photo.fingerprint[:16]

    def image(self, photo_id, size):
        return b"\xff\xd8 jpeg bytes"

    def decide(self, photo_id, action, value=None, shown=None, client=None):
        self.decided.append((photo_id, action, value))
        return {"id": photo_id, "rating": value}

    def search(self, query, top):
        self.searched.append((query, top))
        return []


SHOWN = ', "v": "abababababababab", "gen": 0'  # the version of the photo the page showed


def client_for(session, access) -> TestClient:
    """A client whose paths ("/api/photos") are under the review's prefix, as the page's are."""
    return TestClient(build_app(session, access, "shoot"), base_url=ORIGIN + access.prefix)


@pytest.fixture
def site():
    session, access = StandInSession(), Access("127.0.0.1", PORT)
    client = client_for(session, access)
    client.cookies.set(access.cookie_name, access.token)
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', client.get("/").text).group(1)
    headers = {"Content-Type": "application/json", "X-CSRF-Token": csrf}
    return client, session, access, headers


def test_a_stale_cookie_from_an_earlier_review_on_the_port_does_not_lock_out_the_new_url(site):
    _, session, access = site[:3]
    fresh = client_for(session, access)
    fresh.cookies.set(access.cookie_name, "the-token-of-yesterdays-review")
    page = fresh.get(f"/?token={access.token}")
    assert page.status_code == 200
    assert page.headers["set-cookie"].startswith(f"{access.cookie_name}={access.token};")
    fresh.cookies.set(access.cookie_name, access.token)  # as the browser now holds it
    assert fresh.get("/api/photos").status_code == 200
    fresh.cookies.clear()
    fresh.cookies.set(access.cookie_name, "the-token-of-yesterdays-review")
    assert fresh.get("/api/photos").status_code == 403  # and the stale cookie alone still opens nothing


@pytest.mark.parametrize("body", [
    '{"id": true, "action": "reject"}',  # Python's bool is an int: true would be photo 1
    '{"id": 0.0, "action": "reject"}',
    '{"id": "0", "action": "reject"}',
    '{"id": 0, "action": "stars", "value": true}',
    '{"id": 0, "action": "stars", "value": 3.0}',
    '{"id": 0, "action": "stars", "value": 6}',
    '{"id": 0, "action": "stars", "value": 0}',
    '{"id": 0, "action": ["stars"], "value": 3}',
    '[0, "reject"]',
    '{"id": 0, "action": "reject"',
    '\xff\xfe',
    "[" * 20000 + "]" * 20000,  # under the size limit, past the JSON parser's recursion limit
])
def test_decisions_are_json_objects_with_integer_ids_and_stars_only(site, body):
    client, session, _, headers = site
    r = client.post("/api/decide", content=body.encode("utf-8", "surrogateescape"), headers=headers)
    assert r.status_code in (400, 413) and session.decided == []


def test_a_valid_decision_goes_through(site):
    client, session, _, headers = site
    r = client.post("/api/decide", content=b'{"id": 0, "action": "stars", "value": 3' + SHOWN.encode() + b'}',
                    headers={**headers, "Content-Type": "Application/JSON; charset=utf-8", "Origin": ORIGIN,
                             "Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 200 and session.decided == [(0, "stars", 3)]


def test_oversized_bodies_are_refused_without_reading_them_whole(site):
    client, session, _, headers = site
    padded = b'{"id": 0, "action": "reject", "pad": "' + b"a" * MAX_BODY_BYTES + b'"}'
    assert client.post("/api/decide", content=padded, headers=headers).status_code == 413

    def chunks():  # no Content-Length: the server counts as it reads
        yield b'{"id": 0, "action": "reject", "pad": "'
        for _ in range(100):
            yield b"a" * 4096
        yield b'"}'

    assert client.post("/api/decide", content=chunks(), headers=headers).status_code == 413
    assert session.decided == []


@pytest.mark.parametrize("extra", [
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},  # another port of this machine is another site's page
    {"Origin": f"https://127.0.0.1:{PORT}"},
    {"Origin": f"http://127.0.0.1:{PORT + 1}"},
    {"Origin": "null"},
    {"Origin": f"http://127.0.0.1:{PORT}.evil.example"},
    {"Content-Type": "text/plain"},  # a "simple" cross-site request needs no preflight
    {"X-CSRF-Token": ""},
])
def test_posts_from_anywhere_but_the_page_are_refused_even_with_the_csrf_token(site, extra):
    client, session, _, headers = site
    r = client.post("/api/decide", content=b'{"id": 0, "action": "reject"' + SHOWN.encode() + b'}',
                    headers={**headers, **extra})
    assert r.status_code == 403 and session.decided == []


@pytest.mark.parametrize("method", ["OPTIONS", "PUT", "DELETE", "PATCH", "TRACE"])
def test_no_cors_and_no_other_methods(site, method):
    client, _, _, headers = site
    r = client.request(method, "/api/decide", headers={**headers, "Origin": "http://evil.example",
                                                       "Access-Control-Request-Method": "POST"})
    assert r.status_code == 403
    assert not any(k.lower().startswith("access-control-") for k in r.headers)
    assert r.headers["x-frame-options"] == "DENY" and "frame-ancestors 'none'" in r.headers["content-security-policy"]


def test_every_answer_carries_the_security_headers_and_the_api_is_never_cached(site):
    client, _, _, headers = site
    answers = [client.get("/api/photos"), client.get("/nothing"),
               client.post("/api/search", json={"q": "x"}, headers=headers),
               client.post("/api/decide", content=b"x" * (MAX_BODY_BYTES + 1), headers=headers)]
    assert [a.status_code for a in answers] == [200, 404, 200, 413]
    for a in answers:
        assert a.headers["x-content-type-options"] == "nosniff" and a.headers["referrer-policy"] == "no-referrer"
        assert not any(k.lower().startswith("access-control-") for k in a.headers)
    assert answers[0].headers["cache-control"] == "no-store" and answers[2].headers["cache-control"] == "no-store"


def test_image_urls_name_the_content_so_a_later_review_on_the_port_never_shows_a_kept_wrong_photo(site):
    client = site[0]
    version = "ab" * 8
    named = client.get(f"/img/0/thumb?v={version}")
    assert named.status_code == 200 and "immutable" in named.headers["cache-control"]
    bare = client.get("/img/0/thumb")
    assert bare.status_code == 200 and bare.headers["cache-control"] == "private, no-cache"
    assert client.get("/img/0/thumb?v=cd" + "cd" * 7).status_code == 404  # another photo's content
    assert client.get("/img/0/thumb?v=").status_code == 404


@pytest.mark.parametrize("top", [-1, -5, 1e3, "x", "3", True, None])
def test_search_top_is_a_count(site, top):
    client, session, _, headers = site
    r = client.post("/api/search", json={"q": "dog", "top": top}, headers=headers)
    assert r.status_code == 400 and r.json() == {"error": "top must be a number, 0 or more"}
    assert session.searched == []


def test_a_move_stopped_part_way_is_one_error_line_naming_the_photos_that_went(site):
    from clip_cull.review.session import MoveIncomplete

    client, session, _, headers = site

    def stopped():
        raise MoveIncomplete("the move stopped: /p/IMG_2.jpg: No space left on device; 1 of 2 rejects moved", 7, [0])

    session.move_rejects = stopped
    r = client.post("/api/move-rejects", content=b"{}", headers=headers)
    assert r.status_code == 409
    assert r.json() == {"error": "the move stopped: /p/IMG_2.jpg: No space left on device; 1 of 2 rejects moved",
                        "run": 7, "moved": [0]}
    assert client.get("/api/photos").status_code == 200  # and the server goes on


@pytest.mark.parametrize("path", [
    "/img/%D9%A3/thumb",  # an Arabic-Indic digit three
    "/img/%EF%BC%90/thumb",  # a fullwidth digit zero
    "/img/1e2/thumb", "/img/+0/thumb", "/img/-0/thumb", "/img/0x0/thumb",
    "/img/99999999999999999999999999999999/thumb",
    "/img/0/thumb%00", "/img/0/%2e%2e", "/img/0/%2e%2e%2f%2e%2e%2fserver.py",
    "/static/review.js%00", "/static/%2e%2e/server.py", "/static/%2e%2e%2fserver.py", "/static/REVIEW.JS",
    "/static/index.html",  # the template (with its placeholders) is served only as the page
])
def test_odd_ids_and_encoded_traversal_find_nothing(site, path):
    r = site[0].get(path)
    assert r.status_code in (404, 405) and b"import" not in r.content and b"{{CSRF}}" not in r.content


@pytest.mark.parametrize("error, reason", [
    ("changed", "changed on disk since it was shown"),
    ("fifo", "not a regular file (a FIFO / named pipe); only regular files are read"),
    ("gone", "No such file or directory"),
])
def test_a_photo_that_cannot_be_shown_is_one_line_naming_it(site, error, reason):
    import stat

    from clip_cull.core.files import NotRegularFile, not_regular_reason
    from clip_cull.review.thumbs import PhotoChanged

    client, session = site[:2]
    raised = {"changed": PhotoChanged("changed on disk since it was shown"),
              "fifo": NotRegularFile(not_regular_reason(stat.S_IFIFO)),
              "gone": FileNotFoundError(2, "No such file or directory", "/p/a.jpg")}[error]

    def fails(photo_id, size):
        raise raised

    session.image = fails
    r = client.get("/img/0/preview")
    assert r.status_code == 422 and r.text == f"cannot show /p/a.jpg: {reason}"


@pytest.mark.parametrize("header, allowed", [
    (f"127.0.0.1:{PORT}.evil.example", False),
    (f"127.0.0.1:{PORT}, evil.example:{PORT}", False),
    (f"evil.example:80@127.0.0.1:{PORT}", False),
    (f"LOCALHOST:{PORT}", True),  # names are case-blind
    (f"localhost.:{PORT}", False),  # a trailing dot is another name to a resolver's search list
    (f"127.0.0.1.:{PORT}", False),
    (f"[::1]:{PORT}", True),
    (f"[::ffff:127.0.0.1]:{PORT}", False),
    (f"127.1:{PORT}", False), (f"2130706433:{PORT}", False), (f"0x7f.0.0.1:{PORT}", False),
    (f"127.0.0.1:0{PORT}", False), (f"127.0.0.1:+{PORT}", False),
    ("", False),
])
def test_host_header_variants(header, allowed):
    assert Access("127.0.0.1", PORT).host_allowed(header) is allowed


def test_a_request_without_a_host_header_is_refused(site):
    client, _, access, _ = site
    transport_client = TestClient(client.app, base_url=ORIGIN + access.prefix)
    r = transport_client.get(f"/?token={access.token}", headers={"host": ""})
    assert r.status_code == 403


# --- the random path prefix, GETs from other sites, search as a change --------------------------


def test_the_url_and_the_cookie_name_the_reviews_random_path_prefix():
    access = Access("127.0.0.1", PORT)
    assert re.fullmatch(r"/r/[A-Za-z0-9_-]{22}", access.prefix) and access.prefix != Access("127.0.0.1", PORT).prefix
    assert access.url() == f"http://127.0.0.1:{PORT}{access.prefix}/?token={access.token}"


def test_the_cookie_goes_to_the_prefix_only(site):
    client, _, access, _ = site
    page = client.get(f"/?token={access.token}")
    cookie = page.headers["set-cookie"]
    assert cookie.startswith(f"{access.cookie_name}={access.token};")
    # A browser sends 127.0.0.1's cookies to every port, but only to paths under the cookie's Path:
    # another local server would have to know the random prefix to receive it.
    assert f"Path={access.prefix}/" in cookie.split("; ")
    assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower()


@pytest.mark.parametrize("path", ["/", "/api/photos", "/static/review.js", "/img/0/thumb",
                                  "/r/AAAAAAAAAAAAAAAAAAAAAA/api/photos", "/r/", "/r"])
def test_a_path_outside_the_prefix_is_not_found_even_with_the_token(site, path):
    client, session, access, headers = site
    outside = TestClient(client.app, base_url=ORIGIN)
    outside.cookies.set(access.cookie_name, access.token)
    r = outside.get(path + f"?token={access.token}")
    assert r.status_code == 404
    assert r.text == "not found: this review's pages are under the path of the URL clipcull printed"
    assert "set-cookie" not in r.headers
    posted = outside.post(path.rstrip("/") + "/api/decide", json={"id": 0, "action": "reject", "v": None, "gen": 0},
                          headers=headers)
    assert posted.status_code == 404 and session.decided == []


def test_a_path_that_only_starts_like_the_prefix_is_not_found(site):
    client, _, access, _ = site
    near = TestClient(client.app, base_url=ORIGIN)
    near.cookies.set(access.cookie_name, access.token)
    assert near.get(f"{access.prefix}x/api/photos").status_code == 404
    assert near.get(f"{access.prefix[:-1]}/api/photos").status_code == 404
    assert near.get(f"{access.prefix}/api/photos").status_code == 200


@pytest.mark.parametrize("site_header", ["cross-site", "same-site"])
@pytest.mark.parametrize("path", ["/api/photos", "/api/changes?since=0", "/img/0/thumb?v=abababababababab",
                                  "/static/review.js", "/"])
def test_gets_from_another_sites_page_are_refused(site, site_header, path):
    """An <img> or fetch on any other page (another port of this machine is same-site) gets nothing."""
    client = site[0]
    r = client.get(path, headers={"Sec-Fetch-Site": site_header, "Sec-Fetch-Mode": "no-cors"})
    assert r.status_code == 403 and r.text == "forbidden: request from another site"


def test_a_link_from_elsewhere_may_open_the_page_itself_only(site):
    client, _, access, _ = site
    navigate = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}
    assert client.get(f"/?token={access.token}", headers=navigate).status_code == 200  # the redirect file
    assert client.get("/api/photos", headers=navigate).status_code == 403
    for own in ("same-origin", "none"):
        assert client.get("/api/photos", headers={"Sec-Fetch-Site": own}).status_code == 200


def test_search_changes_the_cache_so_it_is_a_post_with_the_csrf_token_from_this_origin(site):
    client, session, _, headers = site
    assert client.get("/api/search?q=cake").status_code == 405
    no_csrf = client.post("/api/search", json={"q": "cake"})
    assert no_csrf.status_code == 403 and no_csrf.text == "forbidden: missing or wrong CSRF token"
    cross = client.post("/api/search", json={"q": "cake"}, headers={**headers, "Sec-Fetch-Site": "cross-site"})
    assert cross.status_code == 403 and cross.text == "forbidden: request from another site"
    assert session.searched == []
    ok = client.post("/api/search", json={"q": "cake"}, headers={**headers, "Sec-Fetch-Site": "same-origin"})
    assert ok.status_code == 200 and ok.json() == {"hits": []} and session.searched == [("cake", 200)]
