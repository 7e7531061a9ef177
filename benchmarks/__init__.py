"""The side-by-side benchmark: the app's four ways to reach vLLM, on one model and machine.

Run it with `python -m benchmarks.run --quick` (CPU, tiny model) or see benchmarks/README.md.
"""
