"""`relay serve --workers N`: Kamailio's dispatcher on the one SIP address in front of N
relay worker processes, one HTTP address for the whole set, children that never outlive
the parent. See supervisor.py (processes), front.py (the HTTP front) and kamailio.py."""
