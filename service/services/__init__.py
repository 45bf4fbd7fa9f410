"""Business logic: what Storefront does, apart from how it is reached over HTTP."""
