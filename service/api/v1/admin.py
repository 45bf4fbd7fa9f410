"""The admin dashboard."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import AdminUser, SessionDep
from service.schemas.user import AdminDashboard
from service.services import users

router = APIRouter(prefix="/admin", tags=["admin"])


@router.get("/dashboard")
async def dashboard(_: AdminUser, session: SessionDep) -> AdminDashboard:
    """Counts of users, products and orders, and revenue of orders not cancelled."""
    return await users.dashboard(session)
