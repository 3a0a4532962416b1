"""digitrec: train digit recognisers on MNIST and read handwritten digits.

    >>> import digitrec
    >>> reading = digitrec.load().read("photo.jpg")     # the bundled model; digitrec.load("runs/x") for yours
    >>> reading.text, [d.confidence for d in reading.digits]
    ('3141', [0.998, 0.999, 0.997, 0.999])

The names below are imported on first use, so `import digitrec` stays light (no torch, no OpenCV).
"""

__version__ = "0.1.0"
__all__ = ["load", "Recognizer", "Reading", "Digit"]


def __getattr__(name: str):
    if name in __all__:
        from digitrec import recognize

        return getattr(recognize, name)
    raise AttributeError(f"module 'digitrec' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
