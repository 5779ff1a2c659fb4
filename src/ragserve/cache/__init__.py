"""Caches shared by the parts of ragserve: answers (invalidated by document changes) and the invalidation
signal that keeps in-process caches of other replicas honest."""
