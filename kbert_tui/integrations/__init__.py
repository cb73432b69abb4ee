"""Adapters that let other trainers report through the client API (each imports its trainer only when used)."""
