"""Policy for the relay: number normalisation, routing decisions, restrictions.

Pure functions only: no I/O, no clock (time is an argument).
"""
