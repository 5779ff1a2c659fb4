"""Rate limits and quotas: token buckets per API key and per client IP, and per-tenant daily quotas.

``protocol.py`` holds the two seams (``RateLimiter``: buckets, ``QuotaCounters``: day counters), ``memory.py``
and ``redis.py`` their backends, ``policy.py`` what the settings ask of them (and letting requests through when
the backend fails), ``factory.py`` builds them once, in the app's lifespan.
"""
