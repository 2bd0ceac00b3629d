"""The lease manager, as parts (see docs/architecture.md, "The lease manager").

Bottom to top: the request types' validation (`requests`), the live-lease index (`index`),
names (`names`), pools and the allowlist (`pools`), moves in flight (`inflight`), the outbox
(`outbox`); the ledger that holds them and commits changes (`ledger`); fleet views for
placement (`views`); settling servers after reports (`settle`); server lifecycle, the only
part that runs servers through the backend (`lifecycle`); placing leases (`placing`);
consolidation moves (`moves`); the reconciler that owns time (`reconciler`); and
`LeaseManager`, the facade the API calls (`facade`).
"""
