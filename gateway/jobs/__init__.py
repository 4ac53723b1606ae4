"""Long work: Job rows, the Dramatiq broker and actor that run them, and job kinds.

Seams, as in dramatiq itself: `broker.py` builds the broker (in-memory or Redis) and its
middleware; `actors.py` declares the one actor that runs any job; `runner.py` is the protocol a
worker follows on a Job row (claim, progress, finish) that makes redelivery harmless;
`service.py` is what resolvers call; `kinds.py` is the registry of what a job can be;
`delivery.py` sends messages through the outbox and keeps the ledger that tells a lost one;
`upkeep.py` renews leases and reaps the jobs of dead workers and lost messages.
"""
