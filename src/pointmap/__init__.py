"""pointmap: unposed photos to 3D with DUSt3R."""

__version__ = "0.1.0"
