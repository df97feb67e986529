"""Headless Chromium through the pages a user reads after a `smoke` run: the asset graph, the
evaluation report of partition `smoke`, and the precision gate's check result.

Screenshots go to $PATX_SCREENSHOT_DIR (or a pytest tmp dir, kept for the last 3 sessions);
their paths are printed in the test report (`-rA` / `-s`).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Iterator

import pytest

from tests.tools import require
from tests.ui.conftest import GATE, PARTITION

pytestmark = [pytest.mark.ui, pytest.mark.slow]

CHROMIUM = os.environ.get("PATX_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-dev-shm-usage", "--no-first-run", "--disable-extensions"]
TIMEOUT_MS = 60_000
PER_VARIANT = ["raw_prices", "features", "splits", "windows", "trained_model", "evaluation_report",
               "champion_model", "latest_signal"]


@pytest.fixture(scope="module")
def screenshot_dir(tmp_path_factory) -> Path:
    path = Path(os.environ.get("PATX_SCREENSHOT_DIR") or tmp_path_factory.mktemp("screenshots"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")  # session: resolved before the package-scoped server
def chromium() -> str:
    """Checked before the server starts, so a missing browser skips (or fails, under CI) at once."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        require(None, "Python playwright")
    require(os.access(CHROMIUM, os.X_OK), f"Chromium at {CHROMIUM}")
    return CHROMIUM


@pytest.fixture(scope="module")
def page(chromium, dagster_server, smoke_run) -> Iterator:
    from playwright.sync_api import sync_playwright

    # The first visit on a loopback host opens a "join the community" dialog over every page;
    # mark it seen on this throwaway instance, as clicking "Skip" would.
    assert dagster_server.server.graphql("mutation { setNuxSeen }")["setNuxSeen"] is True
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1600, "height": 1000}, base_url=dagster_server.server.url)
            context.set_default_timeout(TIMEOUT_MS)
            yield context.new_page()
        finally:
            browser.close()


@pytest.fixture(scope="module")
def evaluation(dagster_server, smoke_run) -> dict:
    path = dagster_server.server.data_dir / "reports" / PARTITION / "evaluation.json"
    assert path.exists(), f"the smoke run ({smoke_run.status}) wrote no {path}"
    return json.loads(path.read_text())


def shoot(page, directory: Path, name: str) -> Path:
    path = directory / name
    page.screenshot(path=str(path))
    print(f"screenshot: {path}")
    return path


def test_asset_graph_page_shows_every_asset(page, screenshot_dir):
    from playwright.sync_api import expect

    page.goto("/asset-groups", wait_until="networkidle")
    expect(page.get_by_text("Global asset lineage")).to_be_visible()
    expect(page.get_by_text("data", exact=True).last).to_be_visible()
    # Groups start collapsed (one box per group); "Expand all groups" (⌥E) shows every asset node.
    first = page.get_by_text("raw_prices", exact=True).last
    try:
        first.wait_for(state="visible", timeout=3_000)
    except Exception:  # playwright's TimeoutError: still collapsed
        page.keyboard.press("Alt+e")
    for name in PER_VARIANT:
        expect(page.get_by_text(name, exact=True).last).to_be_visible()
    # A long name is middle-truncated in the node ("varia…_leaderboard").
    expect(page.get_by_text(re.compile(r"^varia.*leaderboard$")).last).to_be_visible()
    shoot(page, screenshot_dir, "01_asset_graph.png")


def test_evaluation_report_page_shows_the_smoke_report(page, screenshot_dir, smoke_run, evaluation):
    from playwright.sync_api import expect

    gate = evaluation["checks"]["precision_gate"]
    page.goto(f"/assets/evaluation_report?view=partitions&partition={PARTITION}", wait_until="networkidle")
    expect(page.get_by_text(smoke_run.run_id[:8], exact=True)).to_be_visible()  # this run's materialization
    expect(page.get_by_text("gate_reason", exact=True)).to_be_visible()
    expect(page.get_by_text(gate["reason"], exact=True)).to_be_visible()
    page.get_by_text("[Show Markdown]").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    verdict = "Gate PASSED" if gate["passed"] else "Gate FAILED"
    expect(dialog.get_by_text(verdict, exact=True)).to_be_visible()
    expect(dialog.get_by_text(gate["reason"], exact=False).first).to_be_visible()
    expect(dialog.get_by_role("heading", name=re.compile(rf"^{PARTITION}\b.*evaluation report"))).to_be_visible()
    shoot(page, screenshot_dir, "02_evaluation_report_smoke.png")
    page.keyboard.press("Escape")


def test_precision_gate_check_result_is_visible(page, screenshot_dir, evaluation):
    from playwright.sync_api import expect

    gate = evaluation["checks"]["precision_gate"]
    page.goto(f"/assets/evaluation_report?view=checks&checkDetail={GATE}", wait_until="networkidle")
    expect(page.get_by_text(GATE, exact=True).last).to_be_visible()
    expect(page.get_by_text(re.compile(r"This is a\s*blocking\s*asset check"))).to_be_visible()
    expect(page.get_by_text(gate["reason"], exact=True).first).to_be_visible()
    expect(page.get_by_text("Passed" if gate["passed"] else "Failed", exact=True).last).to_be_visible()
    shoot(page, screenshot_dir, "03_precision_gate_check.png")
