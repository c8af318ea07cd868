"""Call recordings: MixMonitor's files moved into a dated store, transcoded, measured and kept for their
retention (jobs in `jobs`, the work in `processing`/`audio`, the pool in `worker`, purge and legal hold
in `retention`); playback is `playback`/`signing`/`access`."""
