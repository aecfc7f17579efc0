"""relay/sms"""
