"""Serving the engine: the ZeroMQ server and its per-image sessions, painted strokes turned into prompts, and the
command line (`python -m backend serve|matte|batch`)."""
