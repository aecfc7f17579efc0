"""relay/rtp"""
