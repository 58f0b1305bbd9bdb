"""Fuzzing the HTTP API: schemathesis from its OpenAPI document, hypothesis, hostile requests.

    .venv/bin/python -m bench.fuzz [--quick] [--seed N] [--no-gunicorn] [--out PATH]

The app runs in-process behind an observer that sees every request any suite makes and
checks each answer (`target`: no 5xx, no traceback, JSON error bodies, a refusal changes no
row and sends nothing, the token never in an answer).

Suites, a module each: `schema` (schemathesis' engine: coverage, fuzzing and stateful
phases, every operation of GET /api/openapi.json), `properties` (hypothesis: repo ids, file
names, revisions, JSON and raw bodies, job ids, queries, headers, static paths), `hostile`
(hand-written: path traversal, NUL, backslashes, long names, oversized and malformed bodies,
content types), `access` (auth: every route without or with a wrong token, the token in the
URL; CSRF: a cookie session changing state without the header, or from another origin; the
WebSocket from a foreign origin), `leaks` (the captured logs never show the token; every
accepted destination stays inside MODELS_DIR, no file was written outside it) and `server`
(one pass against a real gunicorn with its access log on: tokens in URLs are not logged, a
cross-origin WebSocket upgrade gets 403 on the raw socket, oversized chunked bodies get 413).

Prints a markdown table and writes JSON to --out (and a markdown report beside it, `report`);
exits 1 when any check failed, listing each failure with its request.
"""
