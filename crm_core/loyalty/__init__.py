"""Loyalty: earning rules (pure) and the points ledger (lots, journal, allocations, account balances)."""
