"""Web adapters. Each adapter only translates its framework to the core; the cookie / header
handling they share lives in :mod:`stickless.web.transport`."""
