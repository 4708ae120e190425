"""RateLimitSnapshot now belongs to the keys app (keys 0003 took its table over); state only."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("pollers", "0001_initial"),
        ("keys", "0003_ratelimitsnapshot"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(state_operations=[migrations.DeleteModel(name="RateLimitSnapshot")]),
    ]
