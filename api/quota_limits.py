"""A key over its quota (genq/store/quotas.py): 429 `concurrent_quota_exceeded` or
`tokens_quota_exceeded`, with `Retry-After` and the IETF
RateLimit fields (draft-ietf-httpapi-ratelimit-headers), which name the key's policies and what is left:

    RateLimit-Policy: "tokens";q=100000;w=86400;qu="tokens", "concurrent";q=4;qu="concurrent-requests"
    RateLimit: "tokens";r=0;t=3600

`q` is the quota, `w` its window in seconds (a UTC day for tokens; the concurrency quota has none), `r` what
remains of the limit that refused the request and `t` the seconds until it is expected to be free (a UTC
midnight for tokens; a short hint for concurrency, which frees when one of the key's jobs ends).
"""
from __future__ import annotations

from api.errors import ApiError
from genq.store.quotas import DAY_S, Quota, QuotaExceeded

RATE_LIMIT_POLICY = "RateLimit-Policy"
RATE_LIMIT = "RateLimit"


def policy_field(quota: Quota) -> str:
    policies = []
    if quota.tokens_per_day is not None:
        policies.append(f'"tokens";q={quota.tokens_per_day};w={DAY_S};qu="tokens"')
    if quota.max_concurrent is not None:
        policies.append(f'"concurrent";q={quota.max_concurrent};qu="concurrent-requests"')
    return ", ".join(policies)


def quota_error(e: QuotaExceeded) -> ApiError:
    """The 429 for `e`, its code naming the limit."""
    headers = {
        "Retry-After": str(e.reset_s),
        RATE_LIMIT_POLICY: policy_field(e.quota),
        RATE_LIMIT: f'"{e.limit}";r={e.remaining};t={e.reset_s}',
    }
    return ApiError(429, f"{e.limit}_quota_exceeded", str(e), headers=headers)
