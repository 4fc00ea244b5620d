"""Data: the input contract, ingestion, popularity filtering and the simulated demo platform."""
