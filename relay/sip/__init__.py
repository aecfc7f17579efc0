"""relay/sip"""
