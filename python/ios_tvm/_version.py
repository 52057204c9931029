"""The version of ios_tvm (one place: the package, its provenance records and bug reports read it)."""

__version__ = "0.1.0"
