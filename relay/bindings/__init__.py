"""relay/bindings"""
