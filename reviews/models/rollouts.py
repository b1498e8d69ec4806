"""Rollouts and their stages."""
