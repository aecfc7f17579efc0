"""relay/io"""
