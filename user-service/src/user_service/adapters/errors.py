"""Failures of the infrastructure behind user-service's adapters.

UserStoreError        the database did not do what was asked (driver errors wrapped)
"""


class UserStoreError(Exception):
    """The database failed; the original driver error is the cause."""
