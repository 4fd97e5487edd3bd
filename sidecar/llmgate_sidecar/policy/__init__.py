"""What a caller may do: authentication, guardrails, rate limits and budgets, the accounting
that books each request, and the limit stores (in memory and Redis)."""
