"""The nightly retrain job: the whole per-variant graph (leaderboard refreshed separately)."""

import dagster as dg

# The leaderboard is unpartitioned and reads every variant's report; it is refreshed by the
# leaderboard sensor after runs finish rather than inside each variant's run.
retrain_job = dg.define_asset_job(
    "retrain_variant",
    selection=dg.AssetSelection.all() - dg.AssetSelection.assets("variant_leaderboard"),
    description="Rebuild one variant end to end: raw → features → splits → windows → model → report "
                "→ champion (behind the precision gate) → latest signal.",
)

refresh_leaderboard_job = dg.define_asset_job(
    "refresh_leaderboard", selection=dg.AssetSelection.assets("variant_leaderboard"),
    description="Re-read every variant's evaluation.json into the leaderboard.")

refresh_signal_job = dg.define_asset_job(
    "refresh_latest_signal", selection=dg.AssetSelection.assets("latest_signal"),
    description="Apply the variant's existing champion to the newest candles (no retraining).")
