"""Checks the daemon's answers against docs/openapi.json, so the document cannot drift from the code.

`check(method, path, status, headers, body)` finds the operation for (method, path template),
the response for the status, and validates a JSON body against that response's schema
(Draft 2020-12, python3-jsonschema from Debian). It raises AssertionError for a route, method,
status or content type the document lacks, or for a body its schema refuses.
Loupe_fixture's Daemon.request calls it on every answer it sees.

Left out on purpose: OPTIONS (the CORS preflight, 204 on any path, described in the document's
/{file} entry) and the test hooks under /v1/test/ (LOUPE_TEST_HOOKS=1 only, not part of the API).
A path no entry matches falls to /v2/{path} (404 in the V2 shape) or /{file} (the static files);
a route asked with a method it lacks must answer 405 with the Error schema.
"""
import functools
import json
import os
import re
import urllib.parse

import jsonschema

DOC = os.environ.get("LOUPE_OPENAPI",
                     os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "docs", "openapi.json"))
# Entries whose last parameter takes the rest of the path, '/' included (OpenAPI cannot say so).
CATCH_ALL = ("/v2/{path}", "/docs/{file}", "/{file}")


@functools.lru_cache(maxsize=None)
def document():
    with open(DOC, encoding="utf-8") as f:
        return json.load(f)


@functools.lru_cache(maxsize=None)
def _templates():
    """[(template, compiled regex)]: exact paths first, then templates, then the catch-alls."""
    exact, templ, rest = [], [], []
    for t in document()["paths"]:
        if t in CATCH_ALL:
            continue
        rx = re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(t)) + "$")
        (templ if "{" in t else exact).append((t, rx))
    for t in CATCH_ALL:
        rest.append((t, re.compile("^" + re.sub(r"\\\{[^}]+\\\}", ".+", re.escape(t)) + "$")))
    return exact + templ + rest


def template_of(path):
    """The document's path template for a request path (query and fragment ignored), or None."""
    p = urllib.parse.unquote(urllib.parse.urlsplit(path).path)
    if len(p) > 1 and p.endswith("/"):
        p = p[:-1]  # the daemon routes /v1/reports/ as /v1/reports
    for t, rx in _templates():
        if rx.match(p):
            return t
    return None


def _resolve(obj):
    doc = document()
    while isinstance(obj, dict) and "$ref" in obj:
        node = doc
        for part in obj["$ref"].lstrip("#/").split("/"):
            node = node[part]
        obj = node
    return obj


def _media(ctype):
    return (ctype or "").split(";")[0].strip().lower()


_validators = {}
_ANY = {}


def _validate(schema, value, where):
    # One validator per schema object of the document (they live as long as the cached document).
    v = _validators.get(id(schema))
    if v is None:
        resolver = jsonschema.RefResolver.from_schema(document())
        v = _validators[id(schema)] = jsonschema.Draft202012Validator(schema, resolver=resolver)
    errors = sorted(v.iter_errors(value), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        raise AssertionError("%s: the answer does not match docs/openapi.json: %s at %s (of %d errors)\n%s"
                             % (where, e.message[:300], "/".join(map(str, e.absolute_path)) or "(root)",
                                len(errors), json.dumps(value)[:600]))


def check(method, path, status, headers, body):
    """headers: lower-cased names. Raises AssertionError on a mismatch; returns the template or None."""
    method = method.upper()
    split = urllib.parse.urlsplit(path)
    if method == "OPTIONS" or split.path.startswith("/v1/test/"):
        return None
    where = "%s %s -> %d" % (method, split.path, status)
    t = template_of(path)
    if t is None:
        raise AssertionError("%s: no path of docs/openapi.json matches" % where)
    item = document()["paths"][t]
    op = item.get("get" if method == "HEAD" else method.lower())
    ctype = _media(headers.get("content-type"))
    if op is None:
        # Another method on a static path: no such route (404) or a file that is only read (405).
        if status != 405 and not (t in CATCH_ALL and status == 404):
            raise AssertionError("%s: docs/openapi.json has no %s for %s, so the answer should be 405" % (where, method, t))
        if ctype == "application/json":
            fallback = item["get"]["responses"]["404"] if status == 404 else {"$ref": "#/components/responses/NotFound"}
            schema = _resolve(fallback)["content"]["application/json"]["schema"]
            _validate(schema, json.loads(body), where)
        return t
    if t in ("/docs/{file}", "/{file}") and status < 300 and "." not in split.path.rstrip("/").rsplit("/", 1)[-1]:
        # Files have an extension; a route the document lacks would otherwise pass for one.
        raise AssertionError("%s: no route of docs/openapi.json matches (and it is not a file)" % where)
    resp = op["responses"].get(str(status)) or op["responses"].get("default")
    if resp is None:
        raise AssertionError("%s: docs/openapi.json lists no %d for %s %s (it has %s)"
                             % (where, status, method, t, ", ".join(sorted(op["responses"]))))
    resp = _resolve(resp)
    for name, h in resp.get("headers", {}).items():
        if _resolve(h).get("required") and name.lower() not in headers:
            raise AssertionError("%s: the header %s that docs/openapi.json requires is missing" % (where, name))
    content = resp.get("content")
    if method == "HEAD" or not body or not content:
        return t
    media = {_media(k): v for k, v in content.items()}
    entry = media.get(ctype)
    if entry is None and "*/*" in media:
        return t  # a file served as it is, typed by its extension
    if entry is None:
        raise AssertionError("%s: content type %r is not among docs/openapi.json's %s"
                             % (where, ctype, ", ".join(content)))
    if ctype == "application/json":
        try:
            value = json.loads(body)
        except ValueError as e:
            raise AssertionError("%s: application/json that is not JSON: %s" % (where, e))
        _validate(entry.get("schema", _ANY), value, where)
    return t
