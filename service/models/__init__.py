"""SQLAlchemy models: the tables Storefront stores its data in."""

from service.models.base import Base
from service.models.idempotency import IdempotencyKey
from service.models.order import Order, OrderItem, OrderStatus
from service.models.outbox import OutboxMessage
from service.models.product import Product, ProductImage
from service.models.report import Report
from service.models.user import Role, User

__all__ = [
    "Base",
    "IdempotencyKey",
    "Order",
    "OrderItem",
    "OrderStatus",
    "OutboxMessage",
    "Product",
    "ProductImage",
    "Report",
    "Role",
    "User",
]
