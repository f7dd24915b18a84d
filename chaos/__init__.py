"""``make chaos``: the wallet service and the KasPro sandbox as separate processes, a seeded
workload of every money operation from concurrent retrying callers, KasPro faults, SIGKILLs
of the service, then an auditor that checks the money invariants (docs/reliability.md)."""
