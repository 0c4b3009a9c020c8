"""tether's benchmarks: a real tetherd, simulated fleets of real agent clients.

Not tests and not run by pytest. Entry point: ``python -m bench SCENARIO`` (see
``bench/README.md`` and ``docs/performance.md``).
"""
