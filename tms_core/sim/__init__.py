"""The placement simulator: a virtual fleet (`fleet`, `backend`) that drives the real lease
manager through its public methods, and generated traces with the policies played over them
(`trace`). See docs/placement.md, "Simulator"."""
