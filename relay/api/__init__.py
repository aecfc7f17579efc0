"""relay/api"""
