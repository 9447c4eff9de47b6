"""Failures of the infrastructure behind user-service's adapters.

UserStoreError        the database did not do what was asked (driver errors wrapped)

A database that cannot serve the work now raises interchange_common's DatabaseUnavailable.
"""


class UserStoreError(Exception):
    """The database failed; the original driver error is the cause."""
