"""Settle: the billing backend for agencies, studios and freelancers."""
