"""A local stand-in for the Together AI API: same shapes, same errors, faults and scenarios on demand.

Pure Python on raw ASGI, no Django: run it with `python manage.py together_simulator --port N`, or
in-process with `together_dash.simulator.testing.run_simulator()`.
"""
