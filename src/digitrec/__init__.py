"""digitrec: train digit recognisers on MNIST and read handwritten digits."""

__version__ = "0.1.0"
