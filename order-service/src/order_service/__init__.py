"""order-service: orders as event-sourced aggregates (issue #4, in progress).

domain/        the order: commands decide events, events evolve state; no I/O
"""
