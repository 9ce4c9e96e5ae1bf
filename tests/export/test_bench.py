"""The benchmark writes its own section of docs/benchmarks.md and leaves the others alone."""

from __future__ import annotations

from pathlib import Path

from export.bench import SECTION, Cell, percentile, render, write_section


def test_section_is_replaced_in_place(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# Benchmarks\n\n## Classify (service)\n\nkept\n\n{SECTION}\n\nold\n\n## Learning\n\nkept too\n")
    cells = [Cell("tiny", "onnxruntime", what, b, 1.0, 2.0, 100.0, 5) for what in ("classify", "segments")
             for b in (1, 8, 32)]
    write_section(doc, render(cells, {"tensorrt": "not installed"}, "test machine", "python -m export.bench"))
    text = doc.read_text()
    assert "old" not in text and text.count(SECTION) == 1
    assert "## Classify (service)\n\nkept" in text and text.rstrip().endswith("kept too")
    assert "| tiny | onnxruntime | 1.0 / 2.0 ms, 100/s |" in text
    assert "Not run: `tensorrt` (not installed)." in text


def test_missing_file_gets_a_title(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    write_section(doc, f"{SECTION}\n\nnew\n")
    assert doc.read_text().startswith("# Benchmarks\n\n" + SECTION)


def test_p99_of_few_runs_is_the_slowest() -> None:
    assert percentile([3.0, 1.0, 2.0], 99) == 3.0
    assert percentile(list(map(float, range(1, 201))), 99) == 198.0
