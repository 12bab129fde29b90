"""Output formats: text, JSON (ruff's keys), SARIF 2.1.0 and GitHub workflow annotations."""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

from .finding import Finding
from .registry import all_rules, rule_url
from .version import __version__

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
TOOL_NAME = "tf2torch-lint"
TOOL_URI = "https://github.com/tf2torch/tf2torch"
#: Rule severity -> SARIF level and GitHub annotation command.
_SARIF_LEVEL = {"error": "error", "info": "note"}
_GITHUB_COMMAND = {"error": "error", "info": "notice"}


def text(findings: Sequence[Finding]) -> str:
    return "".join(f"{f.filename}:{f.row}:{f.column}: {f.code} {f.message}\n" for f in findings)


def json_(findings: Sequence[Finding]) -> str:
    return json.dumps([{**f.to_json(), "url": rule_url(f.code)} for f in findings], indent=2) + "\n"


def sarif(findings: Sequence[Finding]) -> str:
    rules = all_rules()
    used = sorted({f.code for f in findings} | set(rules))
    index = {code: i for i, code in enumerate(used)}
    driver = {
        "name": TOOL_NAME,
        "informationUri": TOOL_URI,
        "version": __version__,
        "rules": [{
            "id": code,
            "name": rules[code].name,
            "shortDescription": {"text": rules[code].summary},
            "helpUri": rule_url(code),
            "defaultConfiguration": {"level": _SARIF_LEVEL[rules[code].severity]},
            "properties": {"fixable": rules[code].fixable},
        } for code in used],
    }
    results = []
    for f in findings:
        result = {
            "ruleId": f.code,
            "ruleIndex": index[f.code],
            "level": _SARIF_LEVEL[rules[f.code].severity],
            "message": {"text": f.message},
            "locations": [{"physicalLocation": {
                "artifactLocation": {"uri": Path(f.filename).as_posix()},
                "region": {"startLine": f.row, "startColumn": f.column,
                           "endLine": f.end_row, "endColumn": f.end_column},
            }}],
        }
        if f.fix is not None:
            result["fixes"] = [{
                "description": {"text": f.fix.message},
                "artifactChanges": [{
                    "artifactLocation": {"uri": Path(f.filename).as_posix()},
                    "replacements": [{
                        "deletedRegion": {"startLine": e.row, "startColumn": e.column,
                                          "endLine": e.end_row, "endColumn": e.end_column},
                        "insertedContent": {"text": e.content},
                    } for e in f.fix.edits],
                }],
            }]
        results.append(result)
    log = {"version": "2.1.0", "$schema": SARIF_SCHEMA,
           "runs": [{"tool": {"driver": driver}, "results": results, "columnKind": "unicodeCodePoints"}]}
    return json.dumps(log, indent=2) + "\n"


def _escape_data(value: str) -> str:
    return value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(value: str) -> str:
    return _escape_data(value).replace(":", "%3A").replace(",", "%2C")


def github(findings: Sequence[Finding]) -> str:
    rules = all_rules()
    out = []
    for f in findings:
        props = (f"file={_escape_property(f.filename)},line={f.row},col={f.column},"
                 f"endLine={f.end_row},endColumn={f.end_column},title={_escape_property(f.code)}")
        out.append(f"::{_GITHUB_COMMAND[rules[f.code].severity]} {props}::{_escape_data(f'{f.code} {f.message}')}\n")
    return "".join(out)


FORMATS: dict[str, Callable[[Sequence[Finding]], str]] = {
    "text": text, "json": json_, "sarif": sarif, "github": github,
}


def render(findings: Sequence[Finding], output_format: str) -> str:
    return FORMATS[output_format](findings)
