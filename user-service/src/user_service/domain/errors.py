"""What can go wrong in user-service's domain.

UserServiceError
 ├── UserNotFound          no such user, or one the actor may not see
 ├── EmailTaken            another user has that email
 ├── InvalidUserData       a value breaks a rule (name, email, password, role, status)
 ├── PermissionDenied      the actor may not do this (an admin-only change)
 └── InvalidCredentials    email and password do not match an active user
"""


class UserServiceError(Exception):
    """Base of every error user-service's domain raises."""


class UserNotFound(UserServiceError):
    """No such user, or one the actor may not see (never reveal which)."""


class EmailTaken(UserServiceError):
    """Another user already has this email."""


class InvalidUserData(UserServiceError):
    """A value breaks one of the rules about users."""


class PermissionDenied(UserServiceError):
    """The actor may not make this change."""


class InvalidCredentials(UserServiceError):
    """Email and password do not match an active user."""
