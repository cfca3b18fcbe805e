"""docs/openapi.json against the code and the prose: every route of server/srv_routes.c (the test
hooks under /v1/test/ aside) and every route of docs/api.md's contents table is in the document
with its methods, the document has no route the table lacks, openapi_check refuses answers the
document does not describe, and `loupe serve` answers
GET /openapi.json with the file as it is. Exit 0, or 1 with every difference.

Run with /usr/bin/python3; LOUPE_BIN is the loupe binary, LOUPE_SOURCE_DIR the source tree.
"""
import json
import os
import re
import sys
import tempfile
import urllib.parse

SRC = os.environ.get("LOUPE_SOURCE_DIR", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
sys.path.insert(0, os.path.join(SRC, "tests", "integration"))
import loupe_fixture  # noqa: E402
import openapi_check  # noqa: E402

# Document entries that are not routes of the table: the fallback (V2's 404, the static files).
NOT_IN_TABLE = {"/v2/{path}", "/docs/{file}", "/{file}"}


def table_routes():
    """{path: {methods}} from srv_routes.c's table."""
    with open(os.path.join(SRC, "server", "srv_routes.c"), encoding="utf-8") as f:
        text = f.read()
    out = {}
    for path, flags in re.findall(r'^\s*\{"(/[^"]*)",\s*([A-Z_ |]+),', text, re.M):
        if path.startswith("/v1/test/"):
            continue
        out[path] = {m.lower() for m in re.findall(r"SRV_(GET|POST|PUT|DELETE|PATCH)", flags)}
    return out


def api_md_routes():
    """{path: {methods}} from docs/api.md's contents table (rows with a path in backquotes)."""
    with open(os.path.join(SRC, "docs", "api.md"), encoding="utf-8") as f:
        text = f.read()
    out = {}
    for methods, path in re.findall(r"^\| ((?:GET|POST)(?:, (?:GET|POST))*) \| \[?`(/[^`]*)`", text, re.M):
        out[path] = {m.lower() for m in methods.split(", ")}
    return out


def main():
    doc = openapi_check.document()
    paths = {p: {m for m in item if m in ("get", "post", "put", "delete", "patch")} for p, item in doc["paths"].items()}
    bad = []
    table = table_routes()
    if len(table) < 10:
        bad.append("read only %d routes from srv_routes.c: has the table's layout changed?" % len(table))
    for p, ms in table.items():
        if p not in paths:
            bad.append("srv_routes.c has %s, docs/openapi.json does not" % p)
        elif ms != paths[p]:
            bad.append("%s: srv_routes.c has %s, docs/openapi.json %s" % (p, sorted(ms), sorted(paths[p])))
    for p in paths:
        if p not in table and p not in NOT_IN_TABLE:
            bad.append("docs/openapi.json has %s, srv_routes.c does not" % p)
    md = api_md_routes()
    for p, ms in md.items():
        t = p if p in paths else openapi_check.template_of(p)
        if t is None or not ms <= paths.get(t, set()):
            bad.append("docs/api.md's contents has %s %s, docs/openapi.json does not" % (sorted(ms), p))

    # The checker the integration tests call refuses what the document does not describe.
    js = {"content-type": "application/json"}
    healthz = b'{"status":"ok"}'
    refused = [("GET", "/healthz", 200, js, b'{"status":"ok","extra":1}', "a field the schema lacks"),
               ("GET", "/healthz", 418, js, healthz, "a status the route lacks"),
               ("GET", "/healthz", 200, {"content-type": "text/plain"}, healthz, "another content type"),
               ("GET", "/v1/nothing", 200, js, healthz, "a route the document lacks"),
               ("DELETE", "/healthz", 200, js, healthz, "a method the route lacks"),
               ("POST", "/predict", 429, js, b'{"error":{"code":"too_many_requests","message":"full"}}',
                "429 without Retry-After"),
               ("GET", "/v2/models/a", 404, js, b'{"error":{"code":"model_not_found","message":"no"}}',
                "the /v1 error shape under /v2")]
    for method, path, status, headers, body, why in refused:
        try:
            openapi_check.check(method, path, status, headers, body)
            bad.append("openapi_check let through %s (%s %s -> %d)" % (why, method, path, status))
        except AssertionError:
            pass
    openapi_check.check("GET", "/healthz", 200, js, healthz)  # and lets the right answer through

    # The daemon serves the file itself, at /openapi.json and under /docs/.
    with open(openapi_check.DOC, "rb") as f:
        raw = f.read()
    models = tempfile.mkdtemp(prefix="loupe-openapi-")
    d = loupe_fixture.Daemon(os.environ["LOUPE_BIN"], models, "--docs", os.path.join(SRC, "docs"))
    try:
        for route in ("/openapi.json", "/docs/openapi.json"):
            st, h, body = d.request("GET", route)
            if st != 200 or body != raw or not h.get("content-type", "").startswith("application/json"):
                bad.append("GET %s: %d %s, %d bytes: not docs/openapi.json as it is" % (route, st, h.get("content-type"), len(body)))
        if json.loads(body).get("openapi") != "3.1.0":
            bad.append("GET /openapi.json: not OpenAPI 3.1.0")
    finally:
        d.stop()
        os.rmdir(models)
    for b in bad:
        print(b)
    print("%d routes in docs/openapi.json, %d in srv_routes.c, %d in docs/api.md: %s"
          % (len(paths), len(table), len(md), "ok" if not bad else "%d differences" % len(bad)))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
