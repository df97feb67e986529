from patx_dagster.assets.data import features, ingested_candles, raw_prices, splits, windows
from patx_dagster.assets.reporting import (champion_model, evaluation_report, latest_signal, signal_ledger,
                                          track_record, variant_leaderboard)
from patx_dagster.assets.walk_forward import walk_forward
from patx_dagster.assets.search import search_study
from patx_dagster.assets.training import trained_model

ALL_ASSETS = [ingested_candles, raw_prices, features, splits, windows, trained_model, evaluation_report,
              champion_model, latest_signal, signal_ledger, track_record, walk_forward, variant_leaderboard, search_study]
