"""The params file as a document: strict YAML, its JSON Schema, and schema errors as one line.

This is the library's only YAML reader. ``params.schema.yaml`` is package data; where it says
``{$names: FORMULATIONS}`` the schema has the list ``fdm.names.FORMULATIONS``, so the formulations are
named in ``fdm.names`` only. ``schema()`` is that derived schema, and ``schema_file()`` writes it for
Snakemake's ``validate`` in the Snakefile; ``fdm.config`` gives the validated document its meaning. A
key given twice, a YAML syntax error or a schema violation is one ``FdmError`` line naming the file and
the key, in the words a person editing the YAML needs.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import tempfile
from pathlib import Path

import jsonschema
import yaml

from fdm import names
from fdm.errors import FdmError

SCHEMA_PATH = Path(__file__).resolve().parent / "params.schema.yaml"


# YAML ---------------------------------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML silently keeps the last)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            line = key_node.start_mark.line + 1
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r} (line {line})")
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml(path: str | Path):
    """Parse a YAML file; a missing file or a syntax error is one ``FdmError`` line."""
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.load(f, Loader=_StrictLoader)  # noqa: S506 -- a SafeLoader subclass
    except FileNotFoundError:
        raise FdmError(f"params file not found: {path}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise FdmError(f"{path}: not valid YAML: {' '.join(str(problem).split())}{where}") from None


# Schema errors as one line ------------------------------------------------------------------------------------


def derive(node):
    """``node`` with every ``{$names: NAME}`` replaced by the list ``fdm.names.NAME``."""
    if isinstance(node, dict):
        if set(node) == {"$names"}:
            return list(getattr(names, node["$names"]))
        return {key: derive(value) for key, value in node.items()}
    if isinstance(node, list):
        return [derive(value) for value in node]
    return node


@functools.cache
def schema() -> dict:
    """The params JSON Schema (a dict), read once, with the names of ``fdm.names`` filled in."""
    try:
        with open(SCHEMA_PATH, encoding="utf-8") as f:
            return derive(yaml.safe_load(f))
    except FileNotFoundError:
        raise FdmError(f"params schema not found: {SCHEMA_PATH} (a broken install of fdm-pipeline)") from None


@contextlib.contextmanager
def schema_file():
    """The path of a temporary JSON file holding ``schema()``, for tools that read a schema from a file
    (Snakemake's ``validate``); removed on exit."""
    handle, path = tempfile.mkstemp(prefix="fdm-params-schema-", suffix=".json")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as f:
            json.dump(schema(), f)
        yield path
    finally:
        os.unlink(path)


def _key_path(parts) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _looks_numeric(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return isinstance(value, str)


def _describe(error: jsonschema.ValidationError) -> str:
    """The reason of a schema error, in the words a person editing the YAML needs."""
    kind = error.validator
    if kind in ("additionalProperties", "unevaluatedProperties"):
        names = re.findall(r"'([^']*)'", error.message.split("(", 1)[-1])
        return f"unknown key{'s' if len(names) > 1 else ''} {', '.join(repr(n) for n in names)}"
    if kind == "required":
        return f"missing key {error.message.split(' is a required')[0]}"
    in_names = "propertyNames" in error.relative_schema_path
    if kind == "enum":
        choices = ", ".join(str(c) for c in error.validator_value)
        what = "unknown key" if in_names else "unknown value"
        return f"{what} {error.instance!r} (expected one of {choices})"
    if kind == "pattern" and in_names:
        return f"bad name {error.instance!r} (use lowercase letters, digits and _, starting with a letter)"
    if kind == "not" and error.validator_value == {"multipleOf": 2}:
        return f"{error.instance} is even; Heun's NFE is 2 * steps - 1, so odd"
    if kind == "type" and _looks_numeric(error.instance):
        return f"{error.message} (YAML 1.1 reads {error.instance} as text; write it like 1.0e-3)"
    return error.message


def schema_error(path, data) -> FdmError | None:
    """The first schema error of ``data`` (read from ``path``) as one line naming the key, or None."""
    validator = jsonschema.Draft202012Validator(schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(data))
    if error is None:
        return None
    where = _key_path(error.absolute_path)
    return FdmError(f"{path}: {where + ': ' if where else ''}{_describe(error)}")
