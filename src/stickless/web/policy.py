"""``stickless.web.policy.FailurePolicy`` (the name Django settings use): it lives in
:mod:`stickless.web.cycle`, with the rest of a request's decisions."""

from stickless.web.cycle import FailurePolicy

__all__ = ["FailurePolicy"]
