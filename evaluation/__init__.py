"""Evaluation of CMB detection: matching, metrics, stratified reports (docs/evaluation.md).

Entry points: ``evaluation.api.evaluate`` / ``evaluate_cases`` and ``cmb evaluate``.
Needs no torch (import-linter contract in pyproject.toml).
"""
