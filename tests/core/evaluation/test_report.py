"""report.md + PNGs (valid images, inline data URIs for the UI) and the leaderboard."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import pytest
from PIL import Image

from patx_core.settings.config import VariantConfig
from patx_core.evaluation.record import Evaluation, evaluate_variant
from patx_core.evaluation.figures import plot_calibration, plot_confusion, plot_precision_recall
from patx_core.evaluation.report import write_leaderboard, write_report
from tests.core.evaluation.test_record import SEED_SPLIT, synthetic

PNGS = ("training_curves.png", "precision_recall.png", "calibration.png", "confusion.png", "equity.png")


def _evaluation(name: str, overrides: dict, **kwargs) -> tuple[Evaluation, dict]:
    prices, frame, preds, history = synthetic(**kwargs)
    variant = VariantConfig.from_dict(name, {"backtest": {"n_random": 100}, **overrides})
    ev = evaluate_variant(variant, dataset_path="x.parquet", split_frame=frame, prices=prices,
                          history=history, predictions=preds)
    return ev, history


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, Evaluation]:
    ev, history = _evaluation("baseline", {}, skill=0.4)
    out = tmp_path_factory.mktemp("reports") / "baseline"
    md = write_report(out, ev.body, history=history, predictions=ev.predictions, equity=ev.backtest.equity)
    return out, md, ev


def test_report_files_are_valid_pngs(report: tuple[Path, str, Evaluation]) -> None:
    out, _, _ = report
    assert sorted(p.name for p in out.iterdir()) == sorted([*PNGS, "report.md"])  # no temp files left
    for name in PNGS:
        with Image.open(out / name) as img:
            img.verify()
            assert img.format == "PNG" and img.width > 300 and img.height > 200
        with Image.open(out / name) as img:  # verify() leaves the image unusable: open it again
            gray = img.convert("L")
            # a figure, not a blank canvas: dark strokes (axes, text) on a light background, and
            # more than a few percent of the pixels drawn
            lo, hi = gray.getextrema()
            drawn = sum(gray.histogram()[:200]) / (gray.width * gray.height)
            assert hi - lo > 150 and drawn > 0.02, (name, lo, hi, drawn)


def test_markdown_on_disk_links_files_and_ui_markdown_inlines_them(report: tuple[Path, str, Evaluation]) -> None:
    out, md, ev = report
    on_disk = (out / "report.md").read_text()
    assert "data:image" not in on_disk
    assert all(f"]({name})" in on_disk for name in PNGS)
    uris = re.findall(r"\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", md)
    assert len(uris) == len(PNGS)
    assert base64.b64decode(uris[-1]) == (out / "equity.png").read_bytes()
    Image.open(io.BytesIO(base64.b64decode(uris[0]))).verify()
    # Same text apart from the image links.
    assert re.sub(r"\]\([^)]*\)", "]()", md) == re.sub(r"\]\([^)]*\)", "]()", on_disk)


def test_report_opens_with_the_verdict_and_headline_table(report: tuple[Path, str, Evaluation]) -> None:
    _, md, ev = report
    lines = md.splitlines()
    assert lines[0] == "# baseline — gate PASSED · diagnosis: none"
    verdict = lines[2]
    gate, bt = ev.body["checks"]["precision_gate"], ev.body["backtest"]
    assert verdict.startswith("**Gate PASSED**") and gate["reason"] in verdict
    assert f"Lift {gate['lift']:.2f}×" in verdict
    assert "percentile of" in verdict and "buy-and-hold" in verdict
    test = ev.body["metrics"]["test"]
    assert f"{test['n_signals']} / {test['n_samples']}" in md
    assert f"[{test['precision_ci95'][0]:.3f}, {test['precision_ci95'][1]:.3f}]" in md
    assert f"{bt['trades']} ({bt['n_signals']})" in md


def test_failed_seed_report_says_so(tmp_path: Path) -> None:
    ev, history = _evaluation("seed", SEED_SPLIT, skill=0.0, with_test=False)
    md = write_report(tmp_path, ev.body, history=history, predictions=ev.predictions, equity=ev.backtest.equity)
    assert md.splitlines()[0] == "# seed — gate FAILED · diagnosis: abstained, no_ranking_skill"
    assert md.splitlines()[2].startswith("**Gate FAILED** — abstains:")
    with Image.open(tmp_path / "confusion.png") as img:  # one panel: val only
        assert img.width < img.height * 1.5


def test_an_abstaining_report_keeps_its_best_point_in_diagnostics_only(tmp_path: Path) -> None:
    ev, history = _evaluation("noise", {}, skill=0.0)
    md = write_report(tmp_path, ev.body, history=history, predictions=ev.predictions, equity=ev.backtest.equity)
    diag = ev.body["threshold"]["diagnostic"]
    head, _, diagnostics = md.partition("## Diagnostics — not used for signals, the backtest or promotion")
    assert diagnostics, "no Diagnostics section"
    assert f"| threshold (max-F1 on val) | {diag['threshold']:.4f} |" in diagnostics
    assert f"| val signals | {diag['n_signals']} |" in diagnostics
    assert f"{diag['threshold']:.4f}" not in head  # never presented as the model's threshold
    assert "**No threshold: the model abstains**" in head
    assert "**No trades: the model abstains" in head  # the backtest section says why it is empty
    assert "no trades (buy-and-hold" in head.splitlines()[2]  # and so does the verdict
    for code in ("abstained", "no_ranking_skill"):
        assert f"- `{code}` — " in head


def test_plots_of_an_abstaining_model_mark_no_threshold() -> None:
    ev, _ = _evaluation("noise", {}, skill=0.0)
    diag = ev.body["threshold"]["diagnostic"]["threshold"]
    pr = plot_precision_recall(ev.predictions, None, 0.7, diagnostic=diag)
    labels = pr.axes[0].get_legend_handles_labels()[1]
    assert not any("at threshold" in label for label in labels)
    assert any(label.startswith("diagnostic max-F1 point on val") and label.endswith("not used") for label in labels)
    assert "abstains" in pr.axes[0].get_title()
    cal = plot_calibration(ev.predictions, None)
    assert not any(line.get_color() == "crimson" for ax in cal.axes for line in ax.get_lines())
    cm = plot_confusion(ev.predictions, None)
    assert all("abstains (no signals)" in ax.get_title() for ax in cm.axes)


def test_confusion_axes_speak_of_take_profit_and_signals(report: tuple[Path, str, Evaluation]) -> None:
    _, _, ev = report
    fig = plot_confusion(ev.predictions, ev.threshold.threshold)
    for ax in fig.axes:
        assert [t.get_text() for t in ax.get_xticklabels()] == ["no signal", "signal"]
        assert [t.get_text() for t in ax.get_yticklabels()] == ["take-profit not hit", "take-profit hit"]
        words = [t.get_text() for t in (*ax.get_xticklabels(), *ax.get_yticklabels())]
        words += [ax.get_xlabel(), ax.get_ylabel(), ax.get_title()]
        assert not any("TP" in w for w in words)


def test_a_short_test_period_is_shown_as_not_annualized(report: tuple[Path, str, Evaluation]) -> None:
    _, md, ev = report
    days = ev.body["backtest"]["period_days"]
    assert days < 365
    words = f"not annualized (test period {days:.0f} days)"
    assert f"| annualized return | {words} |" in md and f"| Sharpe (annualized) | {words} |" in md


def test_leaderboard_lists_exactly_the_given_variants(tmp_path: Path, report: tuple[Path, str, Evaluation]) -> None:
    _, _, good = report
    bad, _ = _evaluation("noise", {}, skill=0.0)
    text, rows = write_leaderboard({"noise": bad.body, "baseline": good.body}, tmp_path / "leaderboard.md")
    assert (tmp_path / "leaderboard.md").read_text() == text
    assert [r["variant"] for r in rows] == ["baseline", "noise"]  # gate passers first
    assert [r["gate"] for r in rows] == ["passed", "failed"]
    top = rows[0]
    test = good.body["metrics"]["test"]
    assert top["precision"] == test["precision"] and top["signals"] == test["n_signals"]
    assert top["precision_lo"] == test["precision_ci95"][0] and top["roc_auc"] == test["roc_auc"]
    assert top["random_percentile"] == good.body["backtest"]["strategy_percentile"]
    table = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(table) == 3 and "| baseline | test |" in table[1]
    assert "| training wall time (s) |" in table[0]
    assert "wall-clock seconds that variant's last run spent training" in text
    # no track record yet: the live columns say so
    assert table[1].endswith("| passed | none | n/a | n/a | n/a |")
    assert table[2].endswith("| failed | abstained, no_ranking_skill | n/a | n/a | n/a |")


def test_leaderboard_live_columns_come_from_the_track_record(tmp_path: Path, report: tuple[Path, str, Evaluation]) -> None:
    _, _, good = report
    record = {"champion_present": True, "monitor": {"decision": "suspended"},
              "roles": {"champion": {"precision": 0.4, "precision_ci": [0.3, 0.5], "n_resolved": 42},
                        "shadow": {"precision": 0.9, "precision_ci": [0.8, 0.95], "n_resolved": 7}}}
    text, [row] = write_leaderboard({"baseline": good.body}, tmp_path / "leaderboard.md", {"baseline": record})
    assert (row["live_precision"], row["live_ci"], row["live_resolved"], row["monitor"]) == (0.4, [0.3, 0.5], 42,
                                                                                             "suspended")
    assert "| 0.400 [0.300, 0.500] (champion) | 42 | suspended |" in text
    shadow_only = {**record, "champion_present": False, "monitor": None}
    _, [row] = write_leaderboard({"baseline": good.body}, tmp_path / "l2.md", {"baseline": shadow_only})
    assert (row["live_role"], row["live_resolved"], row["monitor"]) == ("shadow", 7, "no champion")


def _with_selection(body: dict, hits: int, n: int, looks: int) -> dict:
    from patx_core.evaluation.selection import selection_gate

    block = {**selection_gate(hits, n, looks, target=0.7, min_confidence=0.5), "looks": []}
    return {**body, "checks": {**body["checks"], "precision_gate_selection": block}}


def test_report_and_leaderboard_say_how_many_looks_each_verdict_paid_for(tmp_path: Path,
                                                                          report: tuple[Path, str, Evaluation]) -> None:
    _, _, good = report
    priced = _with_selection(good.body, 46, 62, 12)
    md = write_report(tmp_path, priced, history=_evaluation("baseline", {}, skill=0.9)[1],
                      predictions=good.predictions, equity=good.backtest.equity)
    lines = md.splitlines()
    assert lines[0] == "# baseline — gate PASSED · diagnosis: none"
    assert lines[2] == ("**Selection gate FAILED: 12 looks, confidence 0.00 < 0.5** — test precision 0.74 on 62 "
                        "signals would pass alone, but 12 models were judged on this test window: confidence 0.00 "
                        "< 0.5.")
    alone = _with_selection(good.body, 46, 62, 1)
    text, rows = write_leaderboard({"twelve": priced, "alone": alone, "old": good.body}, tmp_path / "lb.md")
    by_key = {(r["n_looks"], r["selection"]) for r in rows}
    assert by_key == {(12, "failed"), (1, "passed"), (None, None)}
    assert rows[-1]["selection"] == "failed", "a literal pass that fails the selection gate is not promotable"
    table = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert "| looks | selection confidence | gate |" in table[0]
    assert "| 12 | 0.00 (failed) | passed |" in text and "| 1 | 0.72 (passed) | passed |" in text
    assert "| n/a | n/a | passed |" in text
