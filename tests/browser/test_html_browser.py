"""The HTML page in headless Chromium: boxes, tooltip, zoom, step toggle, messages, escaping.

Needs /usr/bin/chromium and /usr/bin/chromedriver (``scripts/ensure-chromium.sh`` installs them);
without them every test here skips with the reason. One browser serves the whole module.

``python tests/browser/test_html_browser.py docs/html-report.png`` writes the README's screenshot.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipesim import CostModel, get_schedule, simulate
from pipesim.ir import Action, Op
from pipesim.timeline import Event, Timeline
from pipesim.views.grid import step_grid
from pipesim.views.html import HtmlSection, render_html, render_timeline_html
from tests.core.test_html import measured_timeline  # the same hand-written 2-rank run

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

CHROMIUM = os.environ.get("PIPESIM_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("PIPESIM_CHROMEDRIVER", "/usr/bin/chromedriver")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,900", "--hide-scrollbars"]
START_TIMEOUT_S = 60
ARTIFACTS = Path(__file__).parents[1] / "artifacts"
HOSTILE = "</script><b>bold</b>&<!--"
COMPARE = ("1f1b", "zb-h1", "interleaved-1f1b")


def _why_no_browser() -> str | None:
    """None when Chromium and its driver look usable, else the reason to skip."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            return f"{path} not found; run scripts/ensure-chromium.sh (root and network needed)"
    try:
        subprocess.run([CHROMIUM, "--version"], capture_output=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError) as err:
        return f"{CHROMIUM} --version failed: {err}"
    return None


def start_driver() -> Any:
    """A headless Chromium with the browser log on, or pytest.skip saying why there is none."""
    reason = _why_no_browser()
    if reason:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={tempfile.mkdtemp(prefix='pipesim-chrome-')}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(CHROMEDRIVER)
    result: dict[str, Any] = {}

    def start() -> None:
        try:
            result["driver"] = webdriver.Chrome(options=options, service=service)
        except Exception as err:  # any failure to start means: no browser here
            result["error"] = err

    thread = threading.Thread(target=start, daemon=True)
    thread.start()
    thread.join(START_TIMEOUT_S)
    if "driver" not in result:
        service.stop()
        why = result.get("error", f"no answer in {START_TIMEOUT_S} s")
        pytest.skip(f"headless Chromium did not start: {str(why).splitlines()[0]}")
    driver = result["driver"]
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(30)
    return driver


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    drv = start_driver()
    yield drv
    drv.quit()


def compare_sections(ranks: int = 4, microbatches: int = 8) -> list[HtmlSection]:
    """1F1B, ZB-H1 and interleaved 1F1B; per-stage costs scaled so each does the same work."""
    sections = []
    for name in COMPARE:
        schedule = get_schedule(name, ranks, microbatches)
        v = schedule.stages // ranks
        tl = simulate(schedule, CostModel.uniform(schedule.stages, F=1.0 / v))
        sections.append(HtmlSection(name, tl))
    return sections


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("html")
    made = {
        "compare": render_html(compare_sections(), "compare: 4 ranks, 8 microbatches",
                               {"ranks": 4, "microbatches": 8}),
        "measured": render_timeline_html(measured_timeline(), "measured run",
                                         {"loss per step": "2.31 2.05 1.98"}),
        "hostile": render_html([HtmlSection(HOSTILE, measured_timeline(), {HOSTILE: HOSTILE})],
                               HOSTILE, {HOSTILE: HOSTILE}),
        "large": render_timeline_html(simulate(get_schedule("interleaved-1f1b", 16, 64, 2))),
    }
    out = {}
    for name, page in made.items():
        out[name] = root / f"{name}.html"
        out[name].write_text(page, encoding="utf-8")
    return out


def load(driver: Any, path: Path) -> list[dict[str, Any]]:
    """Open ``path`` from file:// and wait for the script; returns the browser log it wrote."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get_log("browser")  # drop what earlier pages logged
    driver.get(path.resolve().as_uri())
    WebDriverWait(driver, 20).until(
        lambda d: d.execute_script("return document.body.dataset.ready === '1'"))
    logs: list[dict[str, Any]] = driver.get_log("browser")
    return logs


def severe(logs: list[dict[str, Any]]) -> list[str]:
    return [e["message"] for e in logs if e["level"] in ("SEVERE", "ERROR", "WARNING")]


def page_data(path: Path) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8")
    match = re.search(r'id="pipesim-data">(.*?)</script>', text, re.S)
    assert match is not None
    data: dict[str, Any] = json.loads(match.group(1))
    return data


def view(driver: Any, section: int = 0) -> tuple[float, float]:
    svg = driver.find_element("css selector", f'svg.timeline[data-section="{section}"]')
    return float(svg.get_attribute("data-view-start")), float(svg.get_attribute("data-view-end"))


def wait_for(driver: Any, condition: Any) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 10).until(lambda d: condition())


def hover(driver: Any, element: Any) -> str:
    """Move the mouse onto ``element``; the tooltip's text once it shows."""
    from selenium.webdriver.common.action_chains import ActionChains

    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
    ActionChains(driver).move_to_element(element).perform()
    tip = driver.find_element("id", "tooltip")
    wait_for(driver, tip.is_displayed)
    text: str = tip.text
    return text


def full_page_screenshot(driver: Any, path: Path, width: int = 1400) -> None:
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": int(height), "deviceScaleFactor": 1, "mobile": False})
    try:
        driver.save_screenshot(str(path))
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_pages_load_without_console_errors(driver: Any, pages: dict[str, Path]) -> None:
    for name in ("compare", "measured", "hostile"):
        logs = load(driver, pages[name])
        assert severe(logs) == [], name
        assert any("pipesim: drew" in e["message"] for e in logs), name


def test_one_box_per_action_with_rank(driver: Any, pages: dict[str, Path]) -> None:
    load(driver, pages["compare"])
    data = page_data(pages["compare"])
    boxes = driver.find_elements("css selector", "[data-action]")
    assert len(boxes) == sum(len(s["events"]) for s in data["sections"])
    drawn = driver.execute_script(
        "return Array.from(document.querySelectorAll('svg[data-section=\"1\"] [data-action]'))"
        ".map(e => [Number(e.dataset.rank), e.dataset.action])")
    assert sorted(map(tuple, drawn)) == sorted((e[0], e[1]) for e in data["sections"][1]["events"])
    ARTIFACTS.mkdir(exist_ok=True)
    full_page_screenshot(driver, ARTIFACTS / "html-compare.png")
    assert (ARTIFACTS / "html-compare.png").read_bytes()[:4] == b"\x89PNG"


def test_hover_shows_action_times_and_inputs(driver: Any, pages: dict[str, Path]) -> None:
    load(driver, pages["compare"])
    box = driver.find_element("css selector", 'svg[data-section="0"] [data-action="2F0"]')
    text = hover(driver, box)
    assert "2F0" in text and "start 2 units" in text and "end 3 units" in text
    assert "1F0 from rank 1 (message), ready at 2 units" in text
    assert "hot" in box.get_attribute("class")


def test_zoom_and_pan_change_the_visible_range(driver: Any, pages: dict[str, Path]) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions.wheel_input import ScrollOrigin

    load(driver, pages["compare"])
    start, end = full = view(driver)
    assert start == 0 and end > 0
    ActionChains(driver).send_keys("+").perform()
    wait_for(driver, lambda: view(driver) != full)
    start, end = view(driver)
    assert end - start == pytest.approx(0.8 * (full[1] - full[0]), rel=1e-3)
    assert view(driver, 2) == (start, end)  # the sections share one axis
    ActionChains(driver).send_keys("\ue014").perform()  # arrow right pans
    wait_for(driver, lambda: view(driver)[0] > start)
    before = view(driver)
    svg = driver.find_element("css selector", 'svg[data-section="0"]')
    ActionChains(driver).scroll_from_origin(ScrollOrigin.from_element(svg), 0, -100).perform()
    wait_for(driver, lambda: view(driver) != before)
    assert view(driver)[1] - view(driver)[0] < before[1] - before[0]
    ActionChains(driver).send_keys("0").perform()
    wait_for(driver, lambda: view(driver) == full)


def test_step_view_moves_boxes_onto_the_unit_grid(driver: Any, pages: dict[str, Path]) -> None:
    load(driver, pages["compare"])
    box = driver.find_element("css selector", 'svg[data-section="0"] [data-action="0B0"]')
    time_x = float(box.get_attribute("x"))
    driver.find_element("id", "mode-step").click()
    svg = driver.find_element("css selector", 'svg[data-section="0"]')
    wait_for(driver, lambda: svg.get_attribute("data-mode") == "step")
    assert float(box.get_attribute("x")) != time_x
    widest = max(len(step_grid(get_schedule(n, 4, 8))[0]) for n in COMPARE)
    assert view(driver) == (0, widest)
    widths = {round(float(b.get_attribute("width")), 3)
              for b in driver.find_elements("css selector", 'svg[data-section="1"] [data-action]')}
    assert len(widths) == 1  # every action one step wide, whatever its cost
    driver.find_element("id", "mode-time").click()
    wait_for(driver, lambda: float(box.get_attribute("x")) == time_x)


def test_memory_lanes_follow_the_axis_in_both_modes(driver: Any, pages: dict[str, Path],
                                                    tmp_path: Path) -> None:
    load(driver, pages["compare"])

    def lanes() -> list[dict[str, float]]:
        boxes: list[dict[str, float]] = driver.execute_script(
            "return Array.from(document.querySelectorAll('svg[data-section=\"0\"] path.mem'))"
            ".map(function (p) { var b = p.getBBox(); return {x: b.x, w: b.width, h: b.height,"
            " plot: p.ownerSVGElement.clientWidth, d: p.getAttribute('d')}; });")
        return boxes

    time = lanes()
    assert len(time) == 4  # one lane per rank
    heights = [b["h"] for b in time]
    assert heights == sorted(heights, reverse=True) and heights[3] > 0  # 1F1B keeps 4, 3, 2, 1
    assert all(b["x"] >= 57 and b["x"] + b["w"] <= b["plot"] for b in time)
    driver.find_element("id", "mode-step").click()
    wait_for(driver, lambda: [b["d"] for b in lanes()] != [b["d"] for b in time])
    steps = lanes()
    assert [b["h"] for b in steps] == heights  # the same levels, placed on the step grid
    driver.find_element("id", "mode-time").click()
    short = Timeline(1, (Event(0, Action(0, Op.F, 0), 0.0, 0.0002),
                         Event(0, Action(0, Op.B, 0), 0.0002, 0.0005)), unit="s", name="short")
    page = tmp_path / "short.html"
    page.write_text(render_timeline_html(short), encoding="utf-8")
    load(driver, page)
    ticks = [t.text for t in driver.find_elements("css selector", "svg .grid text")]
    assert ticks[-1] == "us" and "500" in ticks  # 500 us, not 0.0005 s


def test_messages_are_drawn_on_demand(driver: Any, pages: dict[str, Path]) -> None:
    load(driver, pages["compare"])
    data = page_data(pages["compare"])
    assert driver.find_elements("css selector", ".msgs line") == []
    driver.find_element("id", "show-messages").click()
    lines = 'svg[data-section="0"] .msgs line'
    wait_for(driver, lambda: len(driver.find_elements("css selector", lines)) > 0)
    drawn = driver.find_elements("css selector", lines)
    assert len(drawn) == len(data["sections"][0]["messages"])
    shown = "return getComputedStyle(document.querySelector('.msgs')).display !== 'none'"
    assert driver.execute_script(shown)
    driver.find_element("id", "show-messages").click()
    wait_for(driver, lambda: not driver.execute_script(shown))


def test_measured_run_shows_seconds_and_spans(driver: Any, pages: dict[str, Path]) -> None:
    load(driver, pages["measured"])
    spans = driver.find_elements("css selector", "[data-span]")
    assert len(spans) == 2
    text = hover(driver, spans[1])
    assert "all-reduce" in text and "start 1.25 s" in text and "end 2.5 s" in text
    text = hover(driver, driver.find_element("css selector", '[data-action="0B0"]'))
    assert "start 1.5 s" in text and "1B0 from rank 1 (message), ready at 1.5 s" in text
    assert "loss per step" in driver.find_element("css selector", "dl.facts").text


def test_hostile_title_stays_text(driver: Any, pages: dict[str, Path]) -> None:
    logs = load(driver, pages["hostile"])
    assert severe(logs) == []
    assert driver.title == HOSTILE
    assert driver.find_elements("css selector", "main b, header b") == []
    assert driver.find_element("css selector", "h1").text == HOSTILE


def test_large_page_draws_every_action(driver: Any, pages: dict[str, Path]) -> None:
    logs = load(driver, pages["large"])
    count = driver.execute_script("return document.querySelectorAll('[data-action]').length")
    assert count == 4096
    assert severe(logs) == []
    ms = driver.execute_script("return document.body.dataset.renderMs")
    ARTIFACTS.mkdir(exist_ok=True)
    size = pages["large"].stat().st_size
    (ARTIFACTS / "html-render-times.txt").write_text(
        f"interleaved-1f1b 16 ranks x 64 microbatches: {count} actions, {size} bytes, "
        f"script {ms} ms\n", encoding="utf-8")


def write_readme_screenshot(out: Path) -> None:
    """The README picture: three schedules compared, a tooltip open on ZB-H1."""
    drv = start_driver()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            page = Path(tmp) / "compare.html"
            page.write_text(render_html(
                compare_sections(), "pipesim compare: 4 ranks, 8 microbatches",
                {"costs": "F=1, B=2 per rank (I=W=1), split evenly over virtual stages"}),
                encoding="utf-8")
            load(drv, page)
            drv.set_window_size(1280, 900)
            height = drv.execute_script("return document.documentElement.scrollHeight")
            drv.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
                "width": 1280, "height": int(height), "deviceScaleFactor": 1, "mobile": False})
            box = drv.find_element("css selector", 'svg[data-section="1"] [data-action="1I4"]')
            hover(drv, box)
            drv.save_screenshot(str(out))
    finally:
        drv.quit()


if __name__ == "__main__":
    write_readme_screenshot(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/html-report.png"))
