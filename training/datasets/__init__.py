"""Standardized datasets: one layout for synthetic and imported real data (see layout.py)."""
