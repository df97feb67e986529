"""Data: the raw candle contract, universes of symbols, candle intervals, indicators and features,
triple-barrier labels, leak-free splits, the train-only scaler and windowed views."""
