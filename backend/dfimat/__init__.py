"""DFIMat-S networks: prompts, ISCN (with CRM) and MRN, one idea per module."""
