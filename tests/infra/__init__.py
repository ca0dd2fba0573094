"""Real test infrastructure: a throwaway sshd, a private dockerd, an offline base image.

These are test doubles of a rented GPU host, never part of the product. See
tests/conftest.py for the session fixtures built on them.
"""
