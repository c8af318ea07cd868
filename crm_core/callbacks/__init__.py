"""The missed-call callback queue: one open callback per caller number, claimed by one agent."""
