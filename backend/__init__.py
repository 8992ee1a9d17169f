"""DFIMat backend: the DFIMat-S model (``backend.dfimat``), its engine, server, training and evaluation."""

__version__ = "0.1.0"
