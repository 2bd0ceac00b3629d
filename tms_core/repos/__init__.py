"""Model repositories: where a lease's models come from (`file://`, `s3://`, `http(s)://`),
the administrator's rules over them, and fetching them safely through the node's cache.

Used by the daemon (the presence check at acquire, `Repositories.stat`) and by every sidecar
(`Fetcher`). Credentials stay inside `policy.Credentials` and the sources' requests.
"""
