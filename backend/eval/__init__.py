"""Evaluation with simulated users (`python -m backend.eval`, docs/evaluation.md): prompt simulation, metrics, the
baselines it compares against, and paired comparison of two reports. Evaluation drives the run-time engine
(`backend.runtime`) exactly as the plug-ins do; nothing at run time imports evaluation."""
