"""The Storefront worker: Dramatiq actors on Redis, their middleware, and the cron scheduler."""
