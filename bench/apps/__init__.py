"""The baseline servers the benchmarks compare Storefront with, and the one way all are served."""
