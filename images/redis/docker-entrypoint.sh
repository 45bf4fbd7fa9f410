#!/bin/sh
# As the official image: `docker run IMAGE --flag ...` means `redis-server --flag ...`.
set -e
case "${1:-}" in
-*) set -- redis-server "$@" ;;
esac
exec "$@"
