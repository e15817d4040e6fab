"""What an operator gives, against a live database: an unwritable junit path and a batch size out
of range are reported in one line, without echoing them."""

from __future__ import annotations


from tests.utils.scripts import run_script

MARKER = "Zq9-marker-secret-7Hx"  # a secret that must never be printed back
NEW = "new-secret-0002"


def assert_one_line_error(r, code: int, *secrets: str) -> str:
    out = r.stdout + r.stderr
    assert r.returncode == code, (r.returncode, out)
    assert "Traceback" not in out and "Exception ignored" not in out, out
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for s in (MARKER, *secrets):
        assert s not in out, out
    return lines[0]


def test_unwritable_junit_path_is_not_echoed(deployed_db):
    r = run_script("smoke.py", "--read-only", "--junit", f"/nonexistent/{MARKER}/x.xml", "--dsn", deployed_db)
    assert "--junit" in assert_one_line_error(r, 2)


def test_batch_size_out_of_range_is_a_usage_error(deployed_db):
    for value in ("99999999999999999999", "0", "-1", "1e3", "\u0661\u0662"):  # the last: Arabic-Indic digits
        r = run_script(
            "rotate_keys.py",
            "--dsn",
            deployed_db,
            "--apply",
            "--batch-size",
            value,
            env={"INTEGRATION_ENCRYPTION_SECRET": NEW},
        )
        assert "--batch-size" in assert_one_line_error(r, 2, value if len(value) > 2 else MARKER)
