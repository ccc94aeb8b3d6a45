"""Benchmarks run by ``gridgate bench``; no listener imports them (the CLI loads them lazily)."""
