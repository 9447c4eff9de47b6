"""Alembic environment for notification-service (see interchange_common.migrations)."""

from interchange_common.migrations import run_env
from notification_service.adapters.orm import metadata

run_env(target_metadata=metadata, lock_id=0x6E6F7469)  # "noti": one migration run at a time
