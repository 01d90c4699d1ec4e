"""Rollout engines of the local backend: the decode loops behind ``sample``."""
