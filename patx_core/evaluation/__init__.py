"""Evaluation: metrics, the val threshold and the precision gate, diagnosis, backtest and risk figures,
the evaluation.json record, walk-forward and the report."""
