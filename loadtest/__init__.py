"""Traffic generation, replay and benchmarks for the relay (`python -m loadtest`)."""
