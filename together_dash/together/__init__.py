"""Pure-Python knowledge of the Together API: client, error classifier, rate limits, datasets.

Nothing in this package imports Django, so it can be used from scripts and tested on its own.
"""
