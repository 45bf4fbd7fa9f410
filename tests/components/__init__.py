"""Pytest fixtures that start real components (Redis, PostgreSQL, Prometheus, Jaeger, etcd +
kube-apiserver, helm) on free loopback ports; binaries come from `make tools` (.tools/bin)."""
