"""The nightly sync: upload the journal, pull roster and policy updates."""
