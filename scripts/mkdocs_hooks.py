"""MkDocs hooks for LKPS's documentation site (mkdocs.yml `hooks:`).

- The API reference page is rendered at build time from the OpenAPI document LKPS serves
  (`lkps.app.create_app(Settings()).openapi()`, the same object `/api/openapi.json`
  answers), and that document is published beside it: no hand copy that can drift.
- A few files outside `docs/` (package READMEs, the example agent) become pages, so the
  guides' links to them (`../packages/client/README.md`) resolve on the site as in the
  repository; any other link that leaves `docs/` is left alone, and `--strict` fails on it.

mkdocs is imported inside the hooks only, so tests can import the renderer without the
`docs` dependency group.
"""

from __future__ import annotations

import json
import posixpath
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mkdocs.config.defaults import MkDocsConfig
    from mkdocs.structure.files import Files
    from mkdocs.structure.pages import Page

REPO = Path(__file__).resolve().parent.parent

API_REFERENCE = "api-reference.md"
OPENAPI_JSON = "openapi.json"

# Site page -> the repository files it is made of (the first is its text; the others are
# shown under it as code, each under a heading with its file name).
MIRRORED: dict[str, tuple[str, ...]] = {
    "sdk/python-client.md": ("packages/client/README.md",),
    "sdk/agent-sdk.md": ("packages/agent/README.md",),
    "sdk/example-agent.md": ("examples/agent/README.md", "examples/agent/agent.py"),
}

# Repository path -> the site target a link to it goes to.
LINK_TARGETS: dict[str, str] = {
    "packages/client/README.md": "sdk/python-client.md",
    "packages/client": "sdk/python-client.md",
    "packages/agent/README.md": "sdk/agent-sdk.md",
    "packages/agent": "sdk/agent-sdk.md",
    "examples/agent/README.md": "sdk/example-agent.md",
    "examples/agent": "sdk/example-agent.md",
    "examples/agent/agent.py": "sdk/example-agent.md#agentpy",
}

METHODS = ("get", "put", "post", "delete", "patch")
LINK = re.compile(r"(\]\()([^)\s]+)(\))")


# ---------------------------------------------------------------- the API reference


def served_openapi() -> dict[str, Any]:
    """The document `/api/openapi.json` serves with the default settings."""
    from lkps.app import create_app
    from lkps.config import Settings

    document: dict[str, Any] = create_app(Settings()).openapi()
    return document


def _cell(text: str | None) -> str:
    """Text that stays inside one Markdown table cell."""
    return " ".join((text or "").split()).replace("|", "\\|")


def _anchor(schema_name: str) -> str:
    return "schema-" + schema_name.lower()


def _type(schema: dict[str, Any]) -> str:
    """A schema in a few words: `string (uuid)`, `array of AgentInfo`, `integer or null`."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{_anchor(name)})"
    if "anyOf" in schema:
        return " or ".join(_type(branch) for branch in schema["anyOf"])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"array of {_type(schema.get('items', {}))}"
    words = [str(kind)]
    if "format" in schema:
        words.append(f"({schema['format']})")
    if "enum" in schema:
        words.append("one of " + ", ".join(f"`{value}`" for value in schema["enum"]))
    limits = ("maxLength", "minLength", "maximum", "minimum", "maxProperties", "pattern")
    words += [f"{limit} `{schema[limit]}`" for limit in limits if limit in schema]
    return " ".join(words)


def _properties(schema: dict[str, Any]) -> list[str]:
    required = set(schema.get("required", []))
    rows = ["| field | type | required | description |", "|---|---|---|---|"]
    for name, field in schema.get("properties", {}).items():
        description = field.get("description") or next(
            (b.get("description") for b in field.get("anyOf", []) if b.get("description")), ""
        )
        rows.append(
            f"| `{name}` | {_cell(_type(field))} | {'yes' if name in required else ''} "
            f"| {_cell(description)} |"
        )
    return rows


def _operation(method: str, path: str, operation: dict[str, Any]) -> list[str]:
    lines = [f"### `{method.upper()} {path}`", ""]
    lines += [f"**{operation.get('summary', '')}**", ""]
    if operation.get("description"):
        lines += [operation["description"], ""]
    if operation.get("security"):
        lines += ["Authentication: `Authorization: Bearer <Entra ID access token>`.", ""]
    parameters = operation.get("parameters", [])
    if parameters:
        lines += ["| parameter | in | type | required | description |", "|---|---|---|---|---|"]
        lines += [
            f"| `{p['name']}` | {p['in']} | {_cell(_type(p.get('schema', {})))} "
            f"| {'yes' if p.get('required') else ''} | {_cell(p.get('description'))} |"
            for p in parameters
        ]
        lines.append("")
    body = operation.get("requestBody", {}).get("content", {})
    for media_type, content in body.items():
        schema = content.get("schema", {})
        lines += [f"Request body (`{media_type}`): {_type(schema) if '$ref' in schema else ''}"]
        lines.append("")
        if "properties" in schema:
            lines += [*_properties(schema), ""]
    lines += ["| status | meaning | body | headers |", "|---|---|---|---|"]
    for status, response in operation.get("responses", {}).items():
        schemas = [c.get("schema", {}) for c in response.get("content", {}).values()]
        body_type = ", ".join(_type(s) for s in schemas if s)
        headers = ", ".join(f"`{name}`" for name in response.get("headers", {}))
        lines.append(
            f"| {status} | {_cell(response.get('description'))} | {_cell(body_type)} | {headers} |"
        )
    return [*lines, ""]


def render_openapi(document: dict[str, Any]) -> str:
    """The reference page: every operation by tag, then every schema."""
    info = document["info"]
    lines = [
        "# API reference (OpenAPI)",
        "",
        f"Generated when the site is built from the OpenAPI document LKPS serves at "
        f"`/api/openapi.json` ({info['title']} {info['version']}, OpenAPI "
        f"{document['openapi']}); the same document is [here]({OPENAPI_JSON}), and a "
        f"running LKPS shows it with Swagger UI at `/api/docs`. What the endpoints mean, "
        f"with the rules the schema cannot say, is in [The API, as implemented](api.md).",
        "",
        '!!! note "Errors"',
        "    Every error answers with the [ErrorBody](#schema-errorbody) "
        '`{"error", "message", "request_id"}` and every answer carries `X-Request-ID`.',
        "",
    ]
    by_tag: dict[str, list[str]] = {}
    for path, item in document["paths"].items():
        for method in METHODS:
            if method in item:
                tag = (item[method].get("tags") or ["other"])[0]
                by_tag.setdefault(tag, []).extend(_operation(method, path, item[method]))
    for tag, operation_lines in by_tag.items():
        lines += [f"## {tag.capitalize()}", "", *operation_lines]
    lines += ["## Schemas", ""]
    for name, schema in document.get("components", {}).get("schemas", {}).items():
        lines += [f"### {name} {{#{_anchor(name)}}}", ""]
        if schema.get("description"):
            lines += [schema["description"], ""]
        if "properties" in schema:
            lines += _properties(schema)
        else:
            lines.append(_type(schema))
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------- repository links


def mirrored_page(site_path: str) -> str:
    """A page made of repository files: the first as Markdown, the rest as code."""
    first, *others = MIRRORED[site_path]
    parts = [(REPO / first).read_text(encoding="utf-8").rstrip(), ""]
    for other in others:
        language = {".py": "python", ".sh": "sh"}.get(Path(other).suffix, "")
        code = (REPO / other).read_text(encoding="utf-8").rstrip()
        name = Path(other).name
        parts += [f"## {name} {{#{name.replace('.', '')}}}", "", f"```{language}", code, "```", ""]
    return "\n".join(parts)


def repository_path(site_path: str) -> str:
    """Where the page's text lives in the repository (links in it are relative to that)."""
    if site_path in MIRRORED:
        return MIRRORED[site_path][0]
    return f"docs/{site_path}"


def rewrite_links(markdown: str, site_path: str) -> str:
    """Links that point at repository files are pointed at their pages on the site."""
    source = repository_path(site_path)

    def replace(match: re.Match[str]) -> str:
        target = match.group(2)
        if re.match(r"^[a-z][a-z0-9+.-]*:|^#|^/", target):
            return match.group(0)
        path, hash_mark, fragment = target.partition("#")
        in_repo = posixpath.normpath(posixpath.join(posixpath.dirname(source), path))
        if in_repo in LINK_TARGETS:
            site_target = LINK_TARGETS[in_repo]
        elif in_repo.startswith("docs/"):
            site_target = in_repo.removeprefix("docs/") + hash_mark + fragment
        else:
            return match.group(0)  # leaves the site: mkdocs --strict reports it
        page, _, target_fragment = site_target.partition("#")
        relative = posixpath.relpath(page, posixpath.dirname(site_path) or ".")
        anchor = fragment or target_fragment
        return f"{match.group(1)}{relative}{'#' + anchor if anchor else ''}{match.group(3)}"

    return LINK.sub(replace, markdown)


# ---------------------------------------------------------------- the hooks


def on_files(files: Files, config: MkDocsConfig) -> Files:
    from mkdocs.structure.files import File

    document = served_openapi()
    files.append(File.generated(config, API_REFERENCE, content=render_openapi(document)))
    files.append(File.generated(config, OPENAPI_JSON, content=json.dumps(document, indent=2)))
    for site_path in MIRRORED:
        files.append(File.generated(config, site_path, content=mirrored_page(site_path)))
    return files


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    return rewrite_links(markdown, page.file.src_uri)
