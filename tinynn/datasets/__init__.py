"""tinynn.datasets: MNIST and Fashion-MNIST, verified by checksum (see mnist.py), and a generated stand-in."""

from tinynn.datasets.mnist import load_mnist
from tinynn.datasets.synthetic import synthetic_digits

__all__ = ["load_mnist", "synthetic_digits"]
