"""Issue 18: ``parity --report`` (one offline HTML page, rendered in a real headless Chromium) and
``parity --node-data`` (Model Explorer's node-data format on model.pt2's node names)."""

from __future__ import annotations

import json
import os
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

import migrate
from checks.parity.localize import tf_op_name
from checks.parity.node_data import ratio
from fixtures.models import model_dir
from migrate.cli import main
from tests.browser import Chromium
from tests.test_parity import corrupt_matmul_weight

DOCS = Path(__file__).resolve().parents[1] / "docs"
VOID = {"meta", "br", "hr", "img", "input", "link", "circle", "line", "polygon", "path", "rect"}


def parity(capsys, *args: str | Path) -> tuple[int, str, str]:
    code = main(["parity", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


class Page(HTMLParser):
    """Tags, balance and external references of a page, and the SVG tooltips and labels."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: dict[str, int] = {}
        self.external: list[str] = []
        self.titles: list[str] = []
        self.texts: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] = self.tags.get(tag, 0) + 1
        self.external += [v for k, v in attrs if k in ("src", "href") and v and not v.startswith("#")]
        if tag not in VOID or tag == "circle":  # a point holds its <title>
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] = self.tags.get(tag, 0) + 1  # <line .../>: nothing to close

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        if self.stack and self.stack[-1] == "title" and "circle" in self.stack:
            self.titles.append(data)
        elif data.strip():
            self.texts.append(data.strip())


def check_offline_page(text: str) -> Page:
    page = Page(text)
    assert not page.errors and page.stack == [], page.errors
    assert page.external == [] and "script" not in page.tags and "link" not in page.tags  # opens offline
    assert page.tags["svg"] >= 1 and page.tags["circle"] >= 1
    return page


def render(html: Path, chart: str, screenshot: Path) -> dict:
    """Open the page in headless Chromium, hover the first red point, and read what a user sees."""
    with Chromium() as browser:
        browser.open(html)
        seen = browser.script(f"""
            const chart = document.querySelector('#{chart}');
            const box = chart.getBoundingClientRect();
            return {{text: document.body.innerText, width: box.width, height: box.height,
                     points: chart.querySelectorAll('circle.point').length,
                     over: [...chart.querySelectorAll('circle.over')].map(c => c.querySelector('title').textContent),
                     label: (chart.querySelector('.first-label') || {{}}).textContent || null,
                     resources: performance.getEntriesByType('resource').length}};""")
        browser.hover(f"#{chart} circle.over")
        seen["hovered"] = browser.script(f"return document.querySelector('#{chart} circle.over:hover') !== null")
        browser.screenshot(screenshot)
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 20_000
    return seen


def test_forward_report_and_node_data_show_a_planted_weight_as_the_first_divergence(converted, capsys, tmp_path):
    import torch

    source, out = converted("multi_io")
    bad = tmp_path / "bad"
    node = corrupt_matmul_weight(out, bad)
    html, nodes = tmp_path / "report.html", tmp_path / "nodes.json"
    code, stdout, stderr = parity(capsys, source, bad, "--per-layer", "--format", "json", "--report", html,
                                  "--node-data", nodes)
    assert code == 1, stderr
    report = json.loads(stdout)
    assert report["first_divergence"]["onnx_node"] == node
    layers = report["layers"]
    first = next(e for e in layers if e["diverges"])
    assert first["onnx_node"] == node and first["relative_err"] > 100 * first["rounding_bound"]

    page = check_offline_page(html.read_text())
    assert f"first divergence: {tf_op_name(node)}" in page.texts
    assert len(page.titles) == len(layers) and "FAILED" in " ".join(page.texts)
    for heading in ("Inputs", "Outputs", "Error along the graph", "Versions"):
        assert heading in page.texts

    seen = render(html, "layer-chart", tmp_path / "report.png")
    assert seen["points"] == len(layers) and seen["width"] > 500 and seen["height"] > 200
    assert seen["resources"] == 0 and seen["hovered"]
    assert seen["label"] == f"first divergence: {tf_op_name(node)}"
    assert tf_op_name(node) in seen["over"][0] and "tolerance" in seen["over"][0]
    assert f"First divergence: {tf_op_name(node)}" in seen["text"] and "integers[0, 12)" in seen["text"]
    assert "tensorflow" in seen["text"] and "torch" in seen["text"]  # versions
    if os.environ.get("TF2TORCH_UPDATE_DOCS"):
        shutil.copyfile(tmp_path / "report.png", DOCS / "images" / "parity_report.png")

    # --node-data: every key is a node of the program parity loaded; values are the per-layer report's
    document = json.loads(nodes.read_text())
    results = document["graph"]["results"]
    program = torch.export.load(str(bad / "model.pt2"))
    names = {n.name for n in program.graph.nodes}
    assert results and set(results) <= names
    expected: dict[str, float] = {}
    for entry in layers:
        for name in entry["torch_nodes"]:
            if name in names:
                expected[name] = max(expected.get(name, -1.0), ratio(entry))
    assert {k: v["value"] for k, v in results.items()} == pytest.approx(expected)
    assert max(results[n]["value"] for n in first["torch_nodes"] if n in results) > 100
    assert [t["value"] for t in document["graph"]["thresholds"]][:2] == [1.0, 10.0]


def test_train_report_shows_layers_and_every_parameter(capsys, tmp_path):
    source = model_dir("train_layernorm_channel") / "model.keras"
    migrate.port(source, tmp_path / "out")
    model_py = tmp_path / "out" / "model.py"
    model_py.write_text(model_py.read_text().replace("nn.LayerNorm(8, eps=1e-06)", "nn.LayerNorm(8, eps=0.5)"))
    html = tmp_path / "train.html"
    code, stdout, stderr = parity(capsys, source, tmp_path / "out", "--train", "--trust-model-py", "--format", "json",
                                     "--report", html)
    assert code == 1, stderr
    report = json.loads(stdout)
    page = check_offline_page(html.read_text())
    assert "first divergence: block_norm" in page.texts
    names = [p["torch"] for p in report["train"]["parameters"]]
    assert names == ["norm.weight", "norm.bias", "proj.weight", "proj.bias", "block_norm.weight", "block_norm.bias",
                     "head.weight", "head.bias"]
    seen = render(html, "layer-chart", tmp_path / "train.png")
    assert "First divergence: block_norm" in seen["text"] and "check LayerNorm eps" in seen["text"]
    assert any("LayerNorm(" in t and "model.py line" in t for t in seen["over"])
    for name in names:
        assert name in seen["text"]  # the per-parameter table
    if os.environ.get("TF2TORCH_UPDATE_DOCS"):
        shutil.copyfile(tmp_path / "train.png", DOCS / "images" / "parity_train_report.png")


def test_node_data_is_refused_for_train_runs(capsys, converted):
    source, out = converted("multi_io")
    code, _, stderr = parity(capsys, source, out, "--train", "--node-data", "x.json")
    assert code == 2 and "--node-data colours model.pt2's graph" in stderr
