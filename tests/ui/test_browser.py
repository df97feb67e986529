"""Headless Chromium through the pages a user reads after a `nasdaq|smoke` run: the asset graph,
the dataset × variant partition grid, the evaluation report of partition `nasdaq|smoke` (a refused
model), and the precision gate's non-blocking check result.

Screenshots go to $PATX_SCREENSHOT_DIR (or a pytest tmp dir, kept for the last 3 sessions);
their paths are printed in the test report (`-rA` / `-s`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterator
from urllib.parse import quote

import pytest

from patx_core.storage.artifacts import read_json
from patx_core.settings.datasets import load_datasets
from patx_core.storage.paths import DatasetPaths
from patx_core.settings.variants import load_variants
from tests.tools import require
from tests.ui.conftest import DATASET, DATASETS_FILE, GATE, PARTITION, VARIANT, VARIANTS_FILE

pytestmark = [pytest.mark.ui, pytest.mark.slow]

CHROMIUM = os.environ.get("PATX_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-dev-shm-usage", "--no-first-run", "--disable-extensions"]
TIMEOUT_MS = 60_000
ASSETS = ["ingested_candles", "raw_prices", "features", "splits", "windows", "trained_model", "evaluation_report",
          "champion_model", "latest_signal", "walk_forward"]


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
    path = DatasetPaths.for_dataset(DATASET, dagster_server.server.data_dir).variant(VARIANT).evaluation_json
    assert path.exists(), f"the {PARTITION} run ({smoke_run.status}) wrote no {path}"
    evaluation = read_json(path)
    # The pages below are those of a refused model (the smoke model on the NASDAQ sample).
    assert evaluation["checks"]["precision_gate"]["passed"] is False, evaluation["checks"]["precision_gate"]
    return evaluation


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
    for name in ASSETS:
        expect(page.get_by_text(name, exact=True).last).to_be_visible()
    # A long name is middle-truncated in the node ("varia…_leaderboard").
    expect(page.get_by_text(re.compile(r"^varia.*leaderboard$")).last).to_be_visible()
    shoot(page, screenshot_dir, "01_asset_graph.png")


def test_partitions_page_shows_the_dataset_by_variant_grid(page, screenshot_dir, smoke_run):
    from playwright.sync_api import expect

    datasets, variants = list(load_datasets(DATASETS_FILE)), list(load_variants(VARIANTS_FILE))
    cells = len(datasets) * len(variants)
    page.goto("/assets/evaluation_report?view=partitions", wait_until="networkidle")
    # One column per dimension, each listing its keys; every cell of the grid is a partition.
    expect(page.get_by_placeholder(re.compile(r"^Filter by dataset"))).to_be_visible()
    expect(page.get_by_placeholder(re.compile(r"^Filter by variant"))).to_be_visible()
    for name in datasets + variants:
        expect(page.get_by_text(name, exact=True).first).to_be_visible()
    expect(page.get_by_text(f"{cells} Partitions Selected", exact=True)).to_be_visible()
    expect(page.get_by_text("Materialized (1)", exact=True)).to_be_visible()  # nasdaq|smoke only
    expect(page.get_by_text(f"Missing ({cells - 1})", exact=True)).to_be_visible()
    shoot(page, screenshot_dir, "02_partition_grid.png")


def test_evaluation_report_page_shows_the_refused_smoke_report(page, screenshot_dir, smoke_run, evaluation):
    from playwright.sync_api import expect

    gate = evaluation["checks"]["precision_gate"]
    codes = ", ".join(d["code"] for d in evaluation["diagnosis"]) or "none"
    page.goto(f"/assets/evaluation_report?view=partitions&partition={quote(PARTITION)}", wait_until="networkidle")
    expect(page.get_by_text(PARTITION, exact=True).first).to_be_visible()  # the selected cell's heading
    expect(page.get_by_text(smoke_run.run_id[:8], exact=True)).to_be_visible()  # this run's materialization
    expect(page.get_by_text("gate_reason", exact=True)).to_be_visible()
    expect(page.get_by_text(gate["reason"], exact=True)).to_be_visible()
    page.get_by_text("[Show Markdown]").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    # The report's first line names the cell, the verdict and how the model failed.
    title = f"{DATASET} | {VARIANT} — gate FAILED · diagnosis: {codes}"
    expect(dialog.get_by_role("heading", name=title, exact=True)).to_be_visible()
    expect(dialog.get_by_text("Gate FAILED", exact=True)).to_be_visible()
    expect(dialog.get_by_text(gate["reason"], exact=False).first).to_be_visible()
    shoot(page, screenshot_dir, "03_evaluation_report_nasdaq_smoke.png")
    page.keyboard.press("Escape")


def test_precision_gate_check_result_is_failed_and_non_blocking(page, screenshot_dir, evaluation):
    from playwright.sync_api import expect

    gate = evaluation["checks"]["precision_gate"]
    page.goto(f"/assets/evaluation_report?view=checks&checkDetail={GATE}", wait_until="networkidle")
    expect(page.get_by_text(GATE, exact=True).last).to_be_visible()
    expect(page.get_by_text(re.compile(r"This is a\s*non-blocking\s*asset check"))).to_be_visible()
    expect(page.get_by_text(re.compile(r"This is a\s*blocking\s*asset check"))).to_have_count(0)
    expect(page.get_by_text(gate["reason"], exact=True).first).to_be_visible()
    # The latest execution's row: its result and the partition it judged.
    latest = page.get_by_text("Evaluation result", exact=True).locator("xpath=../..")
    expect(latest.get_by_text("Failed", exact=True)).to_be_visible()
    expect(latest.get_by_text(PARTITION, exact=True)).to_be_visible()
    shoot(page, screenshot_dir, "04_precision_gate_check.png")
