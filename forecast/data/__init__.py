"""Data: the benchmark catalogue, download and cache, loading, splits, scaling, time features and windows."""
