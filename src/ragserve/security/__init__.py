"""Who may call ragserve: API keys and JWT bearer tokens, scopes."""
