"""Benchmarks: flask_chatkit side by side with the official server (see README.md)."""
