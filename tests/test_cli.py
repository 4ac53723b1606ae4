"""The `alphintra` command, run as a real process against the suite's database."""

import re
import subprocess
import sys

from tests.support import unique, wait_for

KEY = re.compile(r"alp_[0-9a-f]{16}_[A-Za-z0-9_-]{32,}")


def run(settings, *args, env=None):
    # the suite's secret key: required with PostgreSQL (CI), and the same key as the test's runtime
    full_env = {"ALPHINTRA_DATABASE_URL": settings.database_url, "ALPHINTRA_LOG_JSON": "false",
                "ALPHINTRA_SECRET_KEY": settings.secret_key, "PATH": "/usr/bin:/bin", **(env or {})}
    return subprocess.run([sys.executable, "-m", "gateway", *args], env=full_env,
                          capture_output=True, text=True, timeout=60)


def test_tenant_and_api_key_commands(migrated, gql):
    slug = unique()
    created = run(migrated, "tenant", "create", "--slug", slug, "--name", "Acme",
                  "--admin-email", f"ops@{slug}.test", "--home-region", "apac")
    assert created.returncode == 0, created.stderr
    admin_key = KEY.search(created.stdout).group(0)
    viewer = gql.data("{ viewer { tenant { slug homeRegion } } }", key=admin_key)["viewer"]
    assert viewer["tenant"] == {"slug": slug, "homeRegion": "apac"}

    again = run(migrated, "tenant", "create", "--slug", slug, "--name", "Acme",
                "--admin-email", f"ops@{slug}.test")
    assert again.returncode != 0 and "TENANT_EXISTS" in again.stderr

    key = run(migrated, "apikey", "create", "--tenant", slug, "--email", f"ops@{slug}.test",
              "--expires-in-days", "30")
    assert key.returncode == 0, key.stderr
    assert gql.data("{ viewer { authenticatedBy } }", key=KEY.search(key.stdout).group(0))

    missing = run(migrated, "apikey", "create", "--tenant", slug, "--email", "nobody@x.test")
    assert missing.returncode != 0 and "USER_NOT_FOUND" in missing.stderr


def test_seed_demo_is_idempotent_and_takes_the_configured_key(migrated, gql):
    demo_key = "alp_0123456789abcdef_" + "d" * 40
    first = run(migrated, "seed-demo", env={"ALPHINTRA_DEMO_API_KEY": demo_key})
    assert first.returncode == 0, first.stderr
    # The running gateway sees roles another process granted, without a restart.
    viewer = wait_for(lambda: (v := gql.data("{ viewer { tenant { slug } user { roles } } }",
                                             key=demo_key)["viewer"])["user"]["roles"] and v,
                      timeout=5)
    assert viewer == {"tenant": {"slug": "demo"}, "user": {"roles": ["admin"]}}
    second = run(migrated, "seed-demo", env={"ALPHINTRA_DEMO_API_KEY": demo_key})
    assert second.returncode == 0 and "exists" in second.stdout
    bad = run(migrated, "seed-demo", env={"ALPHINTRA_DEMO_API_KEY": "not-a-key"})
    assert bad.returncode != 0 and "ALPHINTRA_DEMO_API_KEY" in bad.stderr


def test_worker_without_redis_explains_itself(migrated):
    result = run(migrated, "worker")
    assert result.returncode == 2 and "ALPHINTRA_REDIS_URL" in result.stderr


def test_bad_settings_are_reported(migrated):
    result = run(migrated, "migrate", env={"ALPHINTRA_DEFAULT_REGION": "mars"})
    assert result.returncode != 0 and "default_region" in result.stderr


def test_role_grant_is_applied_and_audited(migrated, runtime, gql):
    slug = unique()
    created = run(migrated, "tenant", "create", "--slug", slug, "--name", "Acme",
                  "--admin-email", f"ops@{slug}.test")
    assert created.returncode == 0, created.stderr
    tenant = runtime.tenancy.tenant_by_slug(slug)
    user = runtime.tenancy.create_user(tenant.id, f"risk@{slug}.test")
    granted = run(migrated, "role", "grant", "--tenant", slug, "--email", f"risk@{slug}.test",
                  "--role", "compliance_officer")
    assert granted.returncode == 0, granted.stderr
    assert "compliance_officer" in runtime.policy.roles(user.id, tenant.id)
    records = runtime.audit.records(tenant.id, kind="permission.granted", subject=user.id,
                                    first=10).items
    assert [(r.actor, r.payload["role"]) for r in records] == [("cli", "compliance_officer")]
    assert runtime.audit.verify(tenant.id).ok

    unknown = run(migrated, "role", "grant", "--tenant", slug, "--email", f"risk@{slug}.test",
                  "--role", "overlord")
    assert unknown.returncode != 0
