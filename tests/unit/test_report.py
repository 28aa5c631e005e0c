"""Tables and reference results as the chapters show them."""
from __future__ import annotations

import json

from tinylm.report import BENCHMARKS_DIR, REFERENCE_DIR, Table, load_benchmark, load_reference


def test_table_renders_markdown_with_its_alignment_and_escaped_pipes():
    table = Table(["setting", "value", "note"], [["`a|b`", 1.5, "x"], ["c", 20, ""]], align="lrc")
    assert table._repr_markdown_().splitlines() == [
        "| setting | value | note |",
        "|:--|--:|:-:|",
        "| `a\\|b` | 1.5 | x |",
        "| c | 20 |  |",
    ]
    assert Table(["lang", "bytes", "tokens"], [])._repr_markdown_().splitlines()[1] == "|:--|--:|--:|"


def test_table_as_text_pads_every_column_to_its_widest_cell():
    text = str(Table(["lang", "bytes"], [["en", "1,024"], ["spanish", 7]]))
    assert text.splitlines() == ["lang     bytes",
                                 "-------  -----",
                                 "en       1,024",
                                 "spanish  7"]


def test_reference_results_are_found_from_any_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a script or test started elsewhere than book/
    committed = json.loads((REFERENCE_DIR / "training_metrics.json").read_text(encoding="utf-8"))
    assert load_reference("training_metrics") == committed
    assert committed["history"]
    assert load_reference("no_such_results") is None


def test_benchmark_results_are_found_from_any_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # chapter 9 opened from elsewhere than book/
    path = BENCHMARKS_DIR / "throughput" / "train_throughput.json"
    committed = json.loads(path.read_text(encoding="utf-8"))
    assert load_benchmark("throughput/train_throughput") == committed
    assert committed["median_tokens_per_s"]["tinylm"] > 0
    assert load_benchmark("no_such_benchmark") is None
