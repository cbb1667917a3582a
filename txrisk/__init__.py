"""Shared core of txrisk: the feature spec, the wire contracts, model bundles and
explanations, used alike by the trainer and the scorer."""

__version__ = "0.1.0"
