"""Model: the PriceActionTransformer and the training recipe that fits it."""
