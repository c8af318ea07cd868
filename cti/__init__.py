"""Telephony side of member-cti: AMI engine, call tracking, agents, dialer, callbacks."""
