"""relay/b2bua"""
