"""scripts/encrypt_key.py --store: writes the ciphertext for a user that exists, refuses one that does not."""

from __future__ import annotations

import json

from tests.utils.encrypt import KEY, SECRET, assert_no_leak, enc
from x402db import db
from x402db.keys.crypto import Keyring


def test_store_upserts_and_refuses_unknown_users(deployed_db):
    with db.connect(deployed_db) as c:
        uid = str(c.execute("INSERT INTO auth.users (email) VALUES ('s@example.invalid') RETURNING id").fetchone()[0])
    r = enc("--store", "--user-id", uid, "--dsn", deployed_db)
    assert r.returncode == 0 and "inserted" in r.stdout, r.stderr
    assert_no_leak(r, KEY)
    r = enc("--store", "--user-id", uid, "--dsn", deployed_db, "--json")
    assert json.loads(r.stdout)["action"] == "updated"
    with db.connect(deployed_db) as c:
        stored = c.execute(
            "SELECT encrypted_api_key FROM public.user_openrouter_integrations WHERE user_id = %s", (uid,)
        ).fetchone()[0]
    assert Keyring(SECRET).decrypt(stored) == KEY
    r = enc("--store", "--user-id", "00000000-0000-0000-0000-00000000abcd", "--dsn", deployed_db)
    assert r.returncode == 1 and "does not exist in auth.users" in r.stderr
    assert enc("--store", "--user-id", "not-a-uuid", "--dsn", deployed_db).returncode == 2
    assert enc("--store", "--dsn", deployed_db).returncode == 2
    assert enc("--store", "--user-id", uid, "--dsn", "postgresql://x@127.0.0.1:1/x").returncode == 2
