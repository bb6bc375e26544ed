"""Where a backend cannot give a guarantee the suites check: expected,
documented differences, by test name.

Each entry names one test (its node id without the ``[backend]``
parameter) and says why it fails on that backend; ``docs/backends.md``
says the same to operators. ``tests/conftest.py`` marks exactly those test
cases ``xfail(strict=True)``: such a test must fail there (if it starts to
pass, the run fails and the entry must go), and every other test runs
unchanged. Nothing here is skipped.
"""

from __future__ import annotations

#: backend kind -> {test node id without parameters: reason}
EXPECTED: dict[str, dict[str, str]] = {
    "memcached": {
        "tests/test_isolation.py::test_a_tenant_cannot_reach_another_tenants_root":
            "memcached has no access control (a SASL login gets the whole cache) and moot no root there: "
            "tenants are isolated only by running one memcached per tenant (docs/security.md)",
        "tests/test_isolation.py::test_a_tenant_works_in_its_own_root_with_least_privileges":
            "memcached has no root: two tenants of one instance share every name, so tenant A's lock 'l' "
            "is the one tenant B holds (docs/security.md: one memcached per tenant)",
    },
}
