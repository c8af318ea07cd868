"""The call log: one row per call (keyed by the PBX's Linkedid), its agents, and agent state history."""
