"""The standard few-shot evaluation protocol, its metrics and result tables."""
