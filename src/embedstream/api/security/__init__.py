"""Who may call the ingress: credentials (API keys, JWTs), scopes, rate limits and the
route class that checks a credential before the request body is read."""
