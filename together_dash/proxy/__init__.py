"""The OpenAI-compatible proxy at /v1/: a lean ASGI app in front of the Together API.

app.py handles one request end to end; auth.py turns the presented key into upstream credentials;
forwarding.py shapes headers, URLs and bodies; sse.py and capture.py watch responses as they pass;
buffer.py writes request logs off the hot path; dispatch.py mounts it all next to Django.
"""
