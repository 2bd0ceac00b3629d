"""The TMS control plane: leases on Triton models, placed, loaded, renewed and released."""

__version__ = "0.1.0"
