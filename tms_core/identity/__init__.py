"""Who is calling: API tokens and roles, sidecar credentials, what each role may do, the
local admin token of a one-machine daemon, and the audit log.

The daemon's one interceptor (`tms_core.api.interceptor`) asks here on every call.
"""
