"""Benchmarks of cosmos_assets against the seed's tools (ffmpeg CLI, scp): ``python -m bench``.

Machines are shared and noisy: competing ways run interleaved, several times, and the figures are
medians and ratios. Nothing here asserts a timing; ``bench/RESULTS.md`` records what was measured.
"""
