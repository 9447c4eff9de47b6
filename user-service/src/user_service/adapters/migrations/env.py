"""Alembic environment for user-service (see interchange_common.migrations)."""

from interchange_common.migrations import run_env
from user_service.adapters.orm import metadata

run_env(target_metadata=metadata, lock_id=0x75736572)  # "user": one migration run at a time
