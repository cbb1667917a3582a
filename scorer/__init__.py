"""The txrisk stream scorer.

consume -> decode -> score + explain -> publish -> commit
"""
