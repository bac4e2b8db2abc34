"""API keys of a test (in clear) and the check that no secret reaches a service log."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from api.auth import Role, create_key, revoke_key

# --- keys ----------------------------------------------------------------------------------


@dataclass
class Keys:
    """API keys of a test, in clear (only their hashes are in Postgres)."""

    by_name: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, name: str) -> str:
        return self.by_name[name]

    def values(self) -> list[str]:
        return list(self.by_name.values())


async def make_keys(dsn: str, tenants: Iterable[str] = ("default", "acme")) -> Keys:
    """A viewer per tenant (``viewer:<tenant>``), a producer, an editor, an admin and a revoked
    admin."""
    conn_pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    keys = Keys()
    try:
        for tenant in tenants:
            keys.by_name[f"viewer:{tenant}"] = await create_key(conn_pool, Role.VIEWER, tenant)
        keys.by_name["producer"] = await create_key(conn_pool, Role.PRODUCER)
        keys.by_name["editor"] = await create_key(conn_pool, Role.EDITOR)
        keys.by_name["admin"] = await create_key(conn_pool, Role.ADMIN)
        keys.by_name["revoked"] = await create_key(conn_pool, Role.ADMIN)
        await revoke_key(conn_pool, keys.by_name["revoked"])
    finally:
        await conn_pool.close()
    return keys


# --- secrets -------------------------------------------------------------------------------


def assert_no_secret_in_logs(log_dir: Path, secrets: Iterable[str]) -> int:
    """No ``secret`` appears in any ``*.log`` under ``log_dir``; returns how many files were read."""
    files = sorted(log_dir.rglob("*.log"))
    assert files, f"no log files under {log_dir}"
    for path in files:
        text = path.read_text(errors="replace")
        for secret in secrets:
            assert secret not in text, f"a secret ({secret[:6]}...) appears in {path}"
    return len(files)
