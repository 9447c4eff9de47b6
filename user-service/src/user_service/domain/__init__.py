"""Users and the rules about them. Pure: nothing here performs I/O.

model.py       User, NewUser, UserChanges, Page, and the rules for them and for who may act
events.py      user.created, user.updated, user.deleted, and which one a change records
usecases.py    Users: what user-service does, written against the ports
ports.py       UserRepository, PasswordHasher, AccessTokenIssuer: what the domain needs
errors.py      UserServiceError and the errors under it
"""
