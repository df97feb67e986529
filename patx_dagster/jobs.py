"""Jobs: the nightly retrain of one (dataset, variant) cell, ingestion, and the leaderboard."""

import dagster as dg

# A search (search_study) runs only when asked for: its winner is judged by an ordinary run.
# The leaderboard is unpartitioned and reads every cell's report; it is refreshed by the
# leaderboard sensor after runs finish rather than inside each cell's run.
retrain_job = dg.define_asset_job(
    "retrain_variant",
    selection=dg.AssetSelection.all() - dg.AssetSelection.assets("variant_leaderboard", "walk_forward", "search_study"),
    description="Rebuild one (dataset, variant) cell end to end: ingest landed candles → raw → features → "
                "splits → windows → model → report → champion (behind the precision gate) → latest signal → "
                "signal ledger → track record.",
)

ingest_job = dg.define_asset_job(
    "ingest_candles", selection=dg.AssetSelection.assets("ingested_candles"),
    description="Merge the files in every dataset's landing folder into its curated store.")

refresh_leaderboard_job = dg.define_asset_job(
    "refresh_leaderboard", selection=dg.AssetSelection.assets("variant_leaderboard"),
    description="Re-read every cell's evaluation.json into the leaderboard.")

# Scoring has its own cadence: every ingest, no retraining (the champion and the shadow score the
# new candles; the ledger resolves and the monitor decides).
score_job = dg.define_asset_job(
    "score", selection=dg.AssetSelection.assets("ingested_candles", "latest_signal", "signal_ledger", "track_record"),
    description="Score one (dataset, variant) cell without retraining: ingest → latest signal → ledger → track record.")

walk_forward_job = dg.define_asset_job(
    "walk_forward_job", selection=dg.AssetSelection.assets("walk_forward").upstream(),
    description="Replay the nightly retrain at past cutoffs for one (dataset, variant): walk_forward.json/.md.")

search_job = dg.define_asset_job(
    "search", selection=dg.AssetSelection.assets("search_study"),
    description="Tune one (dataset, variant) on val with its [NAME.search] table; the winner's best.toml is judged "
                "on test by one ordinary run of the tuned variant.")
