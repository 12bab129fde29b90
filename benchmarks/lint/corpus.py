"""Recall and precision of ``tf2torch lint`` on a corpus of public repository code.

The corpus itself is not in this repository (it must stay unseen by the rules' authors); only
``corpus.json`` is: for each public repository the commit read, the bugs confirmed at a file and
line (``rule`` is the code that should report it), clean files (correct code, several of them
look-alikes of a bug), and the verdict, from reading the code, on every other finding.

Check the repositories out yourself, one folder per repository named ``owner+name`` holding the
files of the listed commit, then::

    python benchmarks/lint/corpus.py benchmarks/lint/corpus.json /tmp/lintcorpus

Each repository is linted as one project (``tf2torch lint DIR``). Nothing is fetched or imported.

- a bug is **caught** when a finding of its rule is on its file and line;
- a finding is **correct** when it catches a bug or is judged correct in ``judged``; it is
  **wrong** when judged wrong, or when it is a finding of families 1-5 in a clean file that is not
  judged; other findings are listed as unjudged and left out of the precision.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _folder(repo: str) -> str:
    return repo.replace("/", "+")


def lint(folder: Path) -> list[dict]:
    out = subprocess.run(
        [sys.executable, "-m", "checks.lint", "--output-format", "json", "--no-cache", "--exit-zero", str(folder)],
        cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def measure(corpus: dict, base: Path) -> dict:
    findings = []  # (repo, path, line, code, message)
    for repo in corpus["repos"]:
        folder = base / _folder(repo)
        if not folder.is_dir():
            raise SystemExit(f"missing {folder}: check out {repo} at {corpus['repos'][repo]}")
        for f in lint(folder):
            path = Path(f["filename"]).resolve().relative_to(folder.resolve()).as_posix()
            findings.append((repo, path, f["location"]["row"], f["code"], f["message"]))
    bugs = {(b["repo"], b["path"], b["line"]): b for b in corpus["bugs"]}
    clean = {(c["repo"], c["path"]) for c in corpus["clean"]}
    judged = {(j["repo"], j["path"], j.get("line"), j["rule"]): j["verdict"] for j in corpus["judged"]}
    caught, correct, wrong, unjudged = set(), [], [], []
    for finding in findings:
        repo, path, line, code, _ = finding
        bug = bugs.get((repo, path, line))
        if bug is not None and code in _codes(bug["rule"]):
            caught.add((repo, path, line))
            correct.append(finding)
            continue
        verdict = judged.get((repo, path, line, code), judged.get((repo, path, None, code)))
        if verdict == "correct":
            correct.append(finding)
        elif verdict == "wrong" or ((repo, path) in clean and code[3] in "12345"):
            wrong.append(finding)
        else:
            unjudged.append(finding)
    missed = [b for key, b in bugs.items() if key not in caught]
    return {"bugs": len(bugs), "caught": len(caught), "missed": missed, "findings": len(findings),
            "correct": len(correct), "wrong": wrong, "unjudged": unjudged, "clean_files": len(clean)}


def _codes(rule: str | list[str]) -> set[str]:
    return {rule} if isinstance(rule, str) else set(rule)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("checkouts", type=Path, help="folder with one owner+name folder per repository")
    args = parser.parse_args(argv)
    result = measure(json.loads(args.corpus.read_text(encoding="utf-8")), args.checkouts)
    judged = result["correct"] + len(result["wrong"])
    print(f"bugs caught: {result['caught']}/{result['bugs']} ({result['caught'] / max(result['bugs'], 1):.0%})")
    print(f"findings correct: {result['correct']}/{judged} ({result['correct'] / max(judged, 1):.1%}); "
          f"{len(result['unjudged'])} unjudged; {result['clean_files']} clean files")
    for b in result["missed"]:
        print(f"missed  {b['repo']} {b['path']}:{b['line']} {b['rule']}  {b.get('note', '')}")
    for repo, path, line, code, message in result["wrong"]:
        print(f"wrong   {repo} {path}:{line} {code} {message[:90]}")
    for repo, path, line, code, message in result["unjudged"]:
        print(f"unjudged {repo} {path}:{line} {code} {message[:90]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
