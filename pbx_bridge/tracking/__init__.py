"""Dynamic and combined tracking: visitor sessions, pool leases, the page snippet and the
attribution of pool calls to sessions."""
