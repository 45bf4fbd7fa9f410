"""Cross-cutting building blocks: settings, security, database, Redis, errors, mail."""
