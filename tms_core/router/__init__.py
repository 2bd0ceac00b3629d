"""The router: a small layer-4 (TCP) proxy process that gives leases stable addresses.

Every lease gets an HTTP and a gRPC address on this machine that does not change while the
lease lives, spread round-robin over the lease's Triton servers; a lease *name* gets addresses
too. When the daemon points a name at another lease, connections opened from then on go to the
new lease's servers while the ones already open finish on the old servers, so a client never
sees a request cut in half. Like kube-proxy, it is a process of its own rather than part of the
daemon, so inference keeps flowing while the daemon restarts or upgrades.

Who calls what: the daemon writes the whole table with `routes.write_routes` and sends SIGHUP;
the router (`python -m tms_core.router`, see `__main__`) applies it with `proxy.Router.apply`
and writes the version it put in force to the applied file, which the daemon reads back with
`routes.read_applied` before it tells a client the address is live. The router imports only the
standard library, so it starts in a blink.
"""
