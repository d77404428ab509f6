"""pynas benchmarks; installed as ``pynas.bench`` and run with ``pynas bench NAME``."""
