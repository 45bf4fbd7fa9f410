"""The Storefront Kopf operator: CRD from Pydantic models, pure rendering/status/scaling, thin
handlers. The folder is `operator/`; the package has its own name so it never shadows stdlib."""
