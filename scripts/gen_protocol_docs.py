#!/usr/bin/env python3
"""Generate ``docs/protocol.md`` from the Structs of :mod:`tether.protocol`.

Everything in the document comes from the code: the module docstrings (transport,
encodings, session flow), the frame Structs and their attribute docstrings, the JSON
Schema msgspec generates for them, the console methods and the error registry. The output
is deterministic, so a test can tell when the file is stale.

    python scripts/gen_protocol_docs.py           # (re)write docs/protocol.md
    python scripts/gen_protocol_docs.py --check   # exit 1 if docs/protocol.md is stale
"""

from __future__ import annotations

import argparse
import ast
import inspect
import itertools
import json
import re
import sys
import textwrap
import typing
from pathlib import Path
from types import ModuleType
from typing import Any

import msgspec

from tether.protocol import actions, codec, console, errors, frames, methods

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "docs" / "protocol.md"
REGENERATE = "python scripts/gen_protocol_docs.py"
REF = "#/$defs/{name}"


# -- docstrings ----------------------------------------------------------------------------


def attribute_docs(module: ModuleType) -> dict[tuple[str, str], str]:
    """``(class, attribute) -> docstring`` for the string literals that follow an attribute
    in a class body (the convention Sphinx and our Structs use)."""
    tree = ast.parse(Path(inspect.getfile(module)).read_text(encoding="utf-8"))
    docs: dict[tuple[str, str], str] = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef):
            continue
        body = node.body
        for stmt, after in itertools.pairwise(body):
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                name = stmt.target.id
            elif (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                  and isinstance(stmt.targets[0], ast.Name)):
                name = stmt.targets[0].id
            else:
                continue
            if (isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)):
                docs[node.name, name] = inspect.cleandoc(after.value.value)
    return docs


def rst_to_md(text: str) -> str:
    """The little reStructuredText our docstrings use, as Markdown."""
    text = re.sub(r":\w+:`~?(?:[\w.]+\.)?(\w+)`", r"``\1``", text)
    text = text.replace("``", "`")
    out: list[str] = []
    lines = inspect.cleandoc(text).splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.endswith("::"):
            out.append(line[:-1] if line[:-2].strip() else "")
            i += 1
            block: list[str] = []
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith(" ")):
                block.append(lines[i])
                i += 1
            while block and not block[-1].strip():
                block.pop()
            while block and not block[0].strip():
                block.pop(0)
            out += ["```", *textwrap.dedent("\n".join(block)).splitlines(), "```", ""]
        else:
            out.append(line)
            i += 1
    return "\n".join(out).strip()


def one_line(text: str | None) -> str:
    """A docstring as one Markdown table cell."""
    if not text:
        return ""
    return " ".join(rst_to_md(text).split()).replace("|", "\\|")


# -- types and schemas ---------------------------------------------------------------------


def type_name(cls: type, field: str) -> str:
    """The field's annotation as written in the source (``from __future__ import annotations``),
    a ``Literal`` alias spelt out (``CancelReason``: ``Literal['cancelled', 'expired']``)."""
    for klass in cls.__mro__:
        annotation = inspect.get_annotations(klass).get(field)
        if annotation is not None:
            alias = getattr(sys.modules[klass.__module__], str(annotation), None)
            if typing.get_origin(alias) is typing.Literal:
                return f"Literal[{', '.join(repr(a) for a in typing.get_args(alias))}]"
            return str(annotation).replace("msgspec.", "")
    raise LookupError(f"{cls.__name__}.{field} has no annotation")


def default_text(field: msgspec.structs.FieldInfo) -> str:
    if field.required:
        return "required"
    if field.default_factory is not msgspec.NODEFAULT:
        value = field.default_factory()
    else:
        value = field.default
    if isinstance(value, msgspec.Raw):
        return f"`{msgspec.json.encode(msgspec.msgpack.decode(value)).decode()}` (pre-encoded)"
    return f"`{msgspec.json.encode(value).decode()}`"


def schema_type(cls: type[msgspec.Struct]) -> type[msgspec.Struct]:
    """``cls``, or a twin whose ``Raw`` defaults are decoded: msgspec cannot put a ``Raw``
    value in a schema's ``default``. Same name, fields, tag and docstring."""
    fields = msgspec.structs.fields(cls)
    if not any(isinstance(f.default, msgspec.Raw) for f in fields):
        return cls
    spec: list[tuple[str, Any, Any]] = []
    for f in fields:
        if f.required:
            spec.append((f.name, f.type, msgspec.NODEFAULT))
        elif isinstance(f.default, msgspec.Raw):
            spec.append((f.name, f.type, msgspec.msgpack.decode(f.default)))
        elif f.default_factory is not msgspec.NODEFAULT:
            spec.append((f.name, f.type, msgspec.field(default_factory=f.default_factory)))
        else:
            spec.append((f.name, f.type, f.default))
    config = cls.__struct_config__
    return msgspec.defstruct(
        cls.__name__, spec, bases=cls.__bases__, namespace={"__doc__": cls.__doc__},
        module=cls.__module__, tag=config.tag, kw_only=True, omit_defaults=config.omit_defaults,
        forbid_unknown_fields=config.forbid_unknown_fields,
    )


def code(text: str) -> str:
    """Inline code in a Markdown table cell (GFM needs ``|`` escaped even there)."""
    return f"`{text}`".replace("|", "\\|")


def compact_json(value: Any, indent: int = 0, width: int = 88) -> str:
    """JSON with every object or array that fits in ``width`` on one line."""
    flat = json.dumps(value, ensure_ascii=False)
    if indent + len(flat) <= width or not isinstance(value, dict | list) or not value:
        return flat
    pad = " " * (indent + 2)
    if isinstance(value, dict):
        items = [f"{pad}{json.dumps(k, ensure_ascii=False)}: {compact_json(v, indent + 2, width)}"
                 for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    items = [pad + compact_json(v, indent + 2, width) for v in value]
    return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"


def clean_descriptions(value: Any) -> Any:
    """The schema with every ``description`` dedented (``inspect.cleandoc``): msgspec
    releases differ in whether they dedent docstrings, and the document must not."""
    if isinstance(value, dict):
        return {k: inspect.cleandoc(v) if k == "description" and isinstance(v, str) else clean_descriptions(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [clean_descriptions(v) for v in value]
    return value


def schema_block(schema: Any) -> list[str]:
    return ["```json", compact_json(clean_descriptions(schema)), "```", ""]


def components(types: list[Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    return msgspec.json.schema_components([_schema_twin(t) for t in types], ref_template=REF)


def _schema_twin(tp: Any) -> Any:
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return schema_type(tp)
    return tp


# -- sections ------------------------------------------------------------------------------


def intro() -> list[str]:
    return [
        "# The tether protocol",
        "",
        f"<!-- Generated by `{REGENERATE}` from `tether/protocol/`. Do not edit by hand. -->",
        "",
        f"Protocol version: **{frames.PROTOCOL_VERSION}**.",
        "",
        "## Transport, encodings and session flow",
        "",
        rst_to_md(frames.__doc__ or ""),
        "",
        "### Decoding",
        "",
        rst_to_md(codec.__doc__ or ""),
        "",
    ]


def frame_sections() -> list[str]:
    docs = attribute_docs(frames)
    # A frame both sides send (batch) says so; it is not the direction of whichever list came last.
    direction = {cls: "both ways" if cls in frames.FROM_DAEMON else "peer → daemon" for cls in frames.TO_DAEMON}
    direction.update({cls: "daemon → peer" for cls in frames.FROM_DAEMON if cls not in frames.TO_DAEMON})
    out = [
        "## Frames",
        "",
        "Every frame is an object whose field `t` names its type. Fields with a default may be",
        "omitted (and are, when they hold the default); unknown fields are ignored.",
        "",
        "| tag | frame | direction | purpose |",
        "|---|---|---|---|",
    ]
    for cls in direction:
        tag = cls.__struct_config__.tag
        out.append(f"| `{tag}` | [{cls.__name__}](#{tag}) | {direction[cls]} | {one_line(cls.__doc__)} |")
    out.append("")
    _, schemas = components(list(direction))
    for cls in direction:
        tag = cls.__struct_config__.tag
        out += [f"### `{tag}`", "", f"`{cls.__name__}`, {direction[cls]}.", ""]
        if cls.__doc__:
            out += [rst_to_md(cls.__doc__), ""]
        out += ["| field | type | default | description |", "|---|---|---|---|",
                f"| `t` | `\"{tag}\"` | required | the frame's tag |"]
        for f in msgspec.structs.fields(cls):
            out.append(f"| `{f.encode_name}` | {code(type_name(cls, f.name))} | {default_text(f)} "
                       f"| {one_line(docs.get((cls.__name__, f.name)))} |")
        out += ["", "<details><summary>JSON Schema</summary>", "", *schema_block(schemas[cls.__name__]),
                "</details>", ""]
    return out


def console_sections() -> list[str]:
    """The methods as :mod:`tether.protocol.methods` declares them, in its order."""
    docs = attribute_docs(console)
    out = [
        "## Console methods",
        "",
        rst_to_md(console.__doc__ or ""),
        "",
        "Params objects reject unknown keys (1201). A token may call the methods of its role and of",
        f"the roles before it ({', '.join(f'`{r}`' for r in console.ROLES)}); anything else is refused with 1403.",
        "",
        "| method | params | result | least role | what it does |",
        "|---|---|---|---|---|",
    ]
    for m in methods.METHODS.values():
        out.append(f"| [`{m.name}`](#{m.name.replace('.', '')}) | `{m.params.__name__}` | `{_name(m.result)}` "
                   f"| `{m.role}` | {one_line(m.summary)} |")
    out += ["| [`action`](#action) | a LimaCharlie action object | the translated method's "
            "| the translated method's | A LimaCharlie action, run as the method it translates to. |", ""]
    for m in methods.METHODS.values():
        params = m.params
        out += [f"### `{m.name}`", "", f"{one_line(m.summary)} Least role: `{m.role}`.", ""]
        if params.__doc__:
            out += [rst_to_md(params.__doc__), ""]
        fields = msgspec.structs.fields(params)
        out += ["| param | type | default | description |", "|---|---|---|---|"]
        for f in fields:
            out.append(f"| `{f.encode_name}` | {code(type_name(params, f.name))} | {default_text(f)} "
                       f"| {one_line(docs.get((params.__name__, f.name)))} |")
        _, defs = components([params])
        out += ["", "Params schema:", "", *schema_block(defs[params.__name__])]
        out += [f"Result: `{_name(m.result)}`.", "", *schema_block(msgspec.json.schema(m.result))]
        for topic, data in m.events:
            out += [f"Before its response, the daemon may send `event` frames for this request, "
                    f"with topic `{topic}` and a `{_name(data)}` as `data`:", "",
                    *schema_block(msgspec.json.schema(data))]
    out += [
        "### `action`",
        "",
        rst_to_md(actions.__doc__ or ""),
        "",
        "The daemon translates the object to one of the methods above; the result is that",
        "method's result. An object it cannot translate is refused with 1202.",
        "",
    ]
    return out


def _name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace(f"{console.__name__}.", "")


def error_section() -> list[str]:
    docs = attribute_docs(errors)
    out = [
        "## Error codes",
        "",
        rst_to_md(errors.__doc__ or ""),
        "",
        "An `error` frame's `name` is the lower-case name below.",
        "",
        "| code | name | family | description |",
        "|---|---|---|---|",
    ]
    for code in sorted(errors.ErrorCode):
        family = "session" if code.is_session_error else "request"
        out.append(f"| {int(code)} | `{code.slug}` | {family} | {one_line(docs.get(('ErrorCode', code.name)))} |")
    out.append("")
    return out


def render() -> str:
    lines = [*intro(), *frame_sections(), *console_sections(), *error_section()]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/protocol.md is stale; write nothing")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT.relative_to(ROOT)} is stale: run `{REGENERATE}`", file=sys.stderr)
            return 1
        return 0
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
