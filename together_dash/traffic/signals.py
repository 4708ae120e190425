"""What traffic announces to the apps above it (alerts listens; traffic never imports them)."""
from __future__ import annotations

from django.dispatch import Signal

# Sent once a batch of request logs is committed, with result=RecordResult (recording.py): its 402s
# and successful billed calls per upstream key. Sent with send_robust: a receiver's failure is logged
# by Django and never fails the recording.
batch_recorded = Signal()
