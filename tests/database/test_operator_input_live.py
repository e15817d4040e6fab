"""What an operator gives, against a live database: an unwritable junit path and a batch size out
of range are reported in one line, without echoing them."""

from __future__ import annotations

from tests.utils.scripts import MARKER, assert_one_line_error, run_script

NEW = "new-secret-0002"


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
