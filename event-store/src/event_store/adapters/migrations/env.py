"""Alembic environment for event-store (see interchange_common.migrations)."""

from interchange_common.migrations import run_env

run_env(target_metadata=None, lock_id=0x65766E74)  # "evnt": one migration run at a time
