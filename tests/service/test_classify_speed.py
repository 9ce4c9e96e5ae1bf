"""``python -m service.classify_speed`` runs end to end and writes its section (tiny preset, in process).

No timing is asserted (figures depend on the machine); what is checked is that every way of
answering is measured and that the compiled answers and the head over the base agree with the
hybrid ones (the head over the int8 image graph is measured, not held to them).
"""

from __future__ import annotations

import json
from pathlib import Path

from export.bench import write_section
from export.int8 import MIN_COSINE
from service.classify_speed import SECTION, main


def test_the_speed_benchmark_measures_every_path_and_writes_its_section(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## Other\n\nkept\n")
    out = tmp_path / "speed.json"
    assert main(["--preset", "tiny", "--data", str(tmp_path / "absent"), "--runs", "3", "--skip-grpc",
                 "--json", str(out), "--write", str(doc)]) == 0
    results = json.loads(out.read_text())
    batches = results["in_process"]["batches"]
    assert set(batches) == {"1", "8", "32"}
    assert all(set(row) == {"monolith", "hybrid", "compiled", "head", "head_int8"} for row in batches.values())
    parities = results["in_process"]["parity"]
    for name in ("compiled", "head"):
        assert parities[name]["top1_same"] == parities[name]["pairs"] and parities[name]["max_score_difference"] <= 1e-4
    assert parities["head_int8"]["pairs"] == parities["head"]["pairs"]  # int8 answers close, not equal: measured
    assert all(c["least"] >= MIN_COSINE for c in results["in_process"]["int8"]["cosine"].values())
    text = doc.read_text()
    assert "## Other\n\nkept" in text and SECTION in text and "head / monolith" in text
    write_section(doc, f"{SECTION}\n\nagain\n", heading=SECTION)  # what a second run does
    text = doc.read_text()
    assert text.count(SECTION) == 1 and "again" in text and "## Other\n\nkept" in text
