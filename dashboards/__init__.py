"""Storefront's Grafana dashboards as code (grafana-foundation-sdk): build, export, preview.

`python -m dashboards.generate` writes the JSON committed in dashboards/ and the chart's copy.
"""
