"""Benchmarks of the data tools; each prints a JSON summary and saves it under results/."""
