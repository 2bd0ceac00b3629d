"""Finding and running a tritonserver on this machine."""
