"""Alembic environment for order-service (see interchange_common.migrations)."""

from interchange_common.migrations import run_env
from interchange_common.projections import metadata as checkpoints
from order_service.adapters.idempotency import metadata as idempotency
from order_service.adapters.read_model import metadata as read_model

run_env(target_metadata=[read_model, idempotency, checkpoints], lock_id=0x6F726472)  # "ordr"
