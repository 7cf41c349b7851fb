"""--html on simulate and compare writes one offline page holding every timeline."""

from __future__ import annotations

import json
import re
from pathlib import Path

from pipesim.cli import main


def _data(path: str) -> dict:
    text = Path(path).read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text
    match = re.search(r'<script type="application/json"[^>]*>(.*?)</script>', text, re.S)
    assert match, "the page embeds its data as JSON"
    return json.loads(match.group(1))


def test_simulate_html(tmp_path) -> None:
    out = str(tmp_path / "s.html")
    assert main(["simulate", "zb-h1", "-p", "4", "-m", "8", "--html", out, "--json"]) == 0
    assert "zb-h1" in Path(out).read_text(encoding="utf-8")
    assert _data(out)


def test_compare_html_has_one_section_per_schedule(tmp_path, capsys) -> None:
    out = str(tmp_path / "c.html")
    assert main(["compare", "-p", "2", "-m", "4", "--html", out]) == 0
    text = Path(out).read_text(encoding="utf-8")
    for name in ("gpipe", "1f1b", "zb-h1", "zbv", "interleaved-1f1b"):
        assert name in text
    assert _data(out)
