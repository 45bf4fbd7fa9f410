"""Operator tests: pure rendering, status and scaling; the CRD; the operator against a real
kube-apiserver."""
