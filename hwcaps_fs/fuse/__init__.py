"""The FUSE shell: the request handlers, the files behind them, the serving daemon."""
