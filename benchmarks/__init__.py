"""Benchmarks: tinynn (NumPy) against torch on the CPU and, where present, a CUDA GPU.

Run ``python -m benchmarks`` (``--quick``, ``--out DIR``, ``--machine NAME``); see cli.py.
"""
