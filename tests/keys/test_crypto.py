from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from django.test import override_settings

from together_dash.keys import crypto


def test_it_round_trips_and_never_stores_plaintext() -> None:
    token = crypto.encrypt("tgp_v1_secretvalue")
    assert "secretvalue" not in token
    assert crypto.decrypt(token) == "tgp_v1_secretvalue"


def test_old_tokens_still_decrypt_after_a_new_key_is_added_and_reencrypt_moves_them() -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    with override_settings(FIELD_ENCRYPTION_KEYS=[old]):
        token = crypto.encrypt("s3cret-value")
    with override_settings(FIELD_ENCRYPTION_KEYS=[new, old]):
        assert crypto.decrypt(token) == "s3cret-value"
        moved = crypto.reencrypt(token)
    with override_settings(FIELD_ENCRYPTION_KEYS=[new]):
        assert crypto.decrypt(moved) == "s3cret-value"
        with pytest.raises(crypto.DecryptionError) as excinfo:
            crypto.decrypt(token)
    assert "s3cret" not in str(excinfo.value)
