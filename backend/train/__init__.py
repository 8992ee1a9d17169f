"""Training DFIMat-S's networks on CPU (`python -m backend.train`, docs/training.md): feature caches, the ISCN, the
MRN and the query selector. Training imports the networks (`backend.dfimat`) and a few run-time rules it trains
against; nothing at run time imports training."""
