"""The hostile values the suites send, as tables, and the hypothesis strategies built from
them: path segments, paths, repo ids, JSON bodies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from tests.oracles import REPO_ORACLE

# The headers of a WebSocket upgrade (the key is RFC 6455's sample).


def escape_canary(secret: str) -> Path:
    """The file a traversal in the hostile suite names, outside MODELS_DIR: it must never
    exist."""
    return Path(f"/tmp/modelpull-fuzz-escape-{secret[-8:]}")  # noqa: S108 (a canary path)


# The hostile values, as tables (kept compact on purpose).
# fmt: off
TRAVERSAL = [
    "..", ".", "", "...", "%2e%2e", "%2E%2E", "%252e%252e", "..%2f", "..%5c", "%2f", "%00",
    "..\\", "\\", "/", "//", "\x00", "C:", "C:\\", "\\\\host\\share", "~", "~root", "$HOME",
    ".modelpull", ".modelpull/partial", "\u2025", "\uff0e\uff0e", "\u002e\u002e\u2215",
    "..;", " ", "\t", "\n", "\r\n", "\u202e", "\ud800", "\ufeff..", "x" * 300,
]
SEPARATORS = ["/", "\\", "//", "/./", "/../", "\x00", "%2f"]
HOMOGLYPHS = [
    "\uff46\uff4f\uff4f/bar", "f\u043e\u043e/bar", "foo/b\u0430r", "foo\u2215bar", "foo\uff0fbar",
    "\u0066oo/bar\u200b",
]
BAD_REPOS = [
    "foo/bar\n", "foo/bar\r", "foo/bar\t", "foo/bar ", " foo/bar", "foo/bar\x00", "a" * 97 + "/b",
    "a/" + "b" * 97, "a" * 200 + "/" + "b" * 200, "a--b/c", "a/b--c", "--/x", "../x", "a/..", "..",
    "../../etc/passwd", "a/b/c", "", " ", "/", "a/", "/b", "a//b", "a/b/", "foo%2fbar",
    "foo/bar%0a", "a\\b/c", "-a/b", "a-/b", ".a/b", "a/.b", "a/b.", "a.", "a/b?x=1", "a/b#x",
    "https://evil.example/a/b", "a/b;c", "a b/c", "a/b/../../c", "~/x", "C:/x", *HOMOGLYPHS,
]
BAD_REVISIONS = [
    "", "main\n", " main", "../../x", "refs/../x", "a/", "a b", "main\x00", "-", "--help",
    "/main", "x" * 201, "\u0440\u0435\u0432", "main%0a", "main;rm -rf", "$(id)",
]
# File names that must be refused before anything is stored ({escape}: a canary path).
BAD_NAMES = [
    "../x", "../../etc/passwd", "a/../../b", "..", ".", "/etc/passwd", "//etc/passwd", "..\\x",
    "a\\..\\..\\b", "C:\\x", "C:x", "\\\\host\\share\\x", "x\x00y", "\x00", "a/./b", "a//b", "a/",
    ".modelpull/partial/x.part", ".modelpull", "{escape}", "x" * 242, "x" * 801, "d/" + "x" * 242,
    "a/" * 600 + "b", "\u202e", "a\x85b", "a\x9b[2J", "a\nb", "a\rb", " ", "a/ /b", "\ud800",
    "a:b", 'a"b', "a|b", "a*b", "a?b", "a<b>",
]
# Odd but plain: percent signs are part of a name, not an escape. Accepted as written.
LITERAL_NAMES = ["%2e%2e/x", "%2e%2e%2fx", "..%2fx", "a..b", ".hidden", "x" * 241]
# Ids and paths in URLs: unknown model or job, never a file.
URL_IDS = [
    "..", "%2e%2e", "..%2f..%2fetc%2fpasswd", "%2e%2e%2f%2e%2e", "a%00b", "a%5c..%5cb",
    "..%5c..%5c", "%252e%252e", "pair%00", "pair%0a", "pair/..", "x" * 20000,
]
STATIC_TRAVERSAL = [
    "../pyproject.toml", "..%2fpyproject.toml", "%2e%2e/%2e%2e/pyproject.toml",
    "..%5c..%5cpyproject.toml", "/etc/passwd", "%2fetc%2fpasswd", "....//....//etc/passwd",
    "css/../../../../app/settings.py", "x%00.css", "..%c0%af..%c0%afetc/passwd",
]
ODD_PATHS = [
    "/api/../healthz", "/API/models", "/api//models", "/api/models/", "/%2e%2e/etc/passwd",
    "/api/models/pair/files/..", "/api/openapi.json/..", "/" + "a" * 50000,
]
MALFORMED_JSON = [
    b'{"repo": "org/name", "files": [', b'{"repo": "org/name"} trailing', b"{'repo': 'a/b'}",
    b"NaN", b"null", b"[]", b'"text"', b"1e999999", b"9" * 5000, b"[" * 60000, b'{"a":' * 12000,
    b"\xef\xbb\xbf{}", b"\xff\xfe{\x00}\x00", b"\x80\x81", b"", b"{}", b'{"files": "x"}',
    b'{"repo": "org/name", "files": []}', b'{"repo": "org/name", "files": [1]}',
    b'{"repo": "org/name", "files": [null]}', b'{"repo": ["org/name"], "files": ["x"]}',
    b'{"repo": "org/name", "files": ["x"], "dest": "/etc"}',
    b'{"repo": "org/name", "files": ["a", "a"]}',
    b'{"repo": "org/name", "files": ["x"], "revision": null}',
    b'{"repo": "org/name", "files": ["x"], "revision": 7}',
    b'{"repo": "org/name", "files": ["x"], "__proto__": {}}',
    b'{"repo": "org/name", "files": ["\\ud800"]}', b'{"repo": "\\u0000/x", "files": ["x"]}',
]
NOT_JSON_TYPES = [
    "text/plain", "application/x-www-form-urlencoded", "application/xml", "", "application/jsonx",
    "multipart/form-data; boundary=zz", "text/json",
]
BAD_QUERIES = [
    "limit=0", "limit=-1", "limit=201", "limit=1.5", "limit=1e2", "limit=%D9%A3", "limit=+5",
    "limit=0x10", "limit=99999", "limit=", "status=QUEUED", "status=queued%0a", "status=%00",
    "cursor=%00", "cursor=" + "A" * 60000, "cursor=%C3%A9", "limit=5&limit=x",
]
CRAFTED_CURSORS = [
    "0001-01-01T00:00:00+14:00|" + "a" * 32, "9999-12-31T23:59:59-14:00|" + "a" * 32,
    "2020-01-01T00:00:00|" + "a" * 32, "2020-01-01T00:00:00+00:00|short", "|", "nan|nan",
]
ODD_AUTHORIZATION = ["Bearer " + "a" * 20000, "Bearer \xe9\xe9", "Bearer {secret}\xe9",
                     "Bearer\t{secret}", "{secret}"]
ODD_COOKIES = ["modelpull_session=" + "A" * 4000, ";;;==", "modelpull_session=.eJ.x.y",
               "token={secret}"]
# fmt: on


def segments() -> st.SearchStrategy[str]:
    """Path segments, hostile ones first."""
    return st.one_of(
        st.sampled_from(TRAVERSAL),
        st.text(min_size=1, max_size=12),
        st.text(alphabet="abc.-_ %\\/:\x00", min_size=1, max_size=8),
        st.integers(min_value=240, max_value=260).map(lambda n: "y" * n),
    )


def path_like() -> st.SearchStrategy[str]:
    """Relative-looking paths built from hostile segments and separators."""
    return st.builds(
        lambda lead, parts, sep: lead + sep.join(parts),
        st.sampled_from(["", "", "/", "\\", "./", "../", "C:\\", "~/"]),
        st.lists(segments(), min_size=1, max_size=5),
        st.sampled_from(SEPARATORS),
    )


def repo_ids() -> st.SearchStrategy[str]:
    """Repo ids: the known-bad ones, random text, and well-formed ones."""
    return st.one_of(
        st.sampled_from(BAD_REPOS),
        st.text(max_size=40),
        st.builds(lambda a, b: f"{a}/{b}", st.text(max_size=100), st.text(max_size=100)),
        st.from_regex(REPO_ORACLE, fullmatch=True),
        path_like(),
    )


def json_values() -> st.SearchStrategy[Any]:
    """Any JSON value, objects leaning towards the download body's keys."""
    scalars = st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=30)
    )
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=5),
            st.dictionaries(
                st.sampled_from(["repo", "files", "revision", "dest", "extra", ""])
                | st.text(max_size=5),
                children,
                max_size=4,
            ),
        ),
        max_leaves=12,
    )
