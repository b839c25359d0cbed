"""tinynn.datasets: MNIST and Fashion-MNIST, verified by checksum (see mnist.py)."""

from tinynn.datasets.mnist import load_mnist

__all__ = ["load_mnist"]
