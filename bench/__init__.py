"""`make bench`: every performance goal measured side by side on real components.

Each area contributes a module with ``figures(ctx: Context) -> list[Figure]``;
``python -m bench`` runs them all, writes ``bench/results.json`` and regenerates
``docs/benchmarks.md``. Figures are ratios against a baseline measured in the same
run, interleaved A B A B, so they survive a noisy shared machine.
"""
