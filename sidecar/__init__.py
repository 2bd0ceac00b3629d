"""The sidecar beside each tritonserver: pulls the models its server is assigned, loads and
unloads them through Triton's repository API, and reports their states to the daemon."""
