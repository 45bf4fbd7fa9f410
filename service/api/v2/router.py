"""Version 2: cursor pagination for catalogue reads."""

from fastapi import APIRouter

from service.api.v2 import products

router = APIRouter(prefix="/api/v2")
router.include_router(products.router)
