"""cxrkit: chest X-ray disease classification on NIH ChestX-ray14 and ChestMNIST."""

__version__ = "0.1.0"
