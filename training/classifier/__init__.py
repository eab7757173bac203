"""The candidate classifier (second stage): harvest U-Net candidates, train, export.

See ``model.candidate_classifier`` for what the product does with it and
docs/model-card.md for how the shipped one was made.
"""
