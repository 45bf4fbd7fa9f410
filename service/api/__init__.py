"""HTTP interface: versioned routers and the dependencies they share."""
