"""No default credential ships enabled in production: every credential in docker-compose.v2.yml comes from
.env, ClickHouse has no passwordless login, and each ClickHouse role holds only what its job needs.

tests/deploy/test_compose.py already proves Compose resolves the file, the lint (defaulted secrets, well-known
passwords, anonymous Grafana, ports) and that each role's password reaches ClickHouse and its client. This
module proves the rest by structure: a random value is put in every .env placeholder and each credential
must resolve to one of them; the users' XML is read element by element, and each grant is parsed.
"""

from __future__ import annotations

import copy
import json
import re
import secrets
import xml.etree.ElementTree as ET
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.deploy.compose_lint import SECRET_NAME, parse_env_file
from tests.deploy.tools import COMPOSE_BINARY, COMPOSE_FILE, DOCKER, ENV_EXAMPLE, run
from tests.support import REPO

USERS_XML = DOCKER / "clickhouse" / "users.d" / "k2-users.xml"
SERVER_XML = DOCKER / "clickhouse" / "config.d" / "k2-server.xml"

#: every product's own credential, and the .env variable it must come from (a product left without one
#: falls back to its well-known default: admin/admin, minioadmin/minioadmin, ClickHouse's open `default`)
PRODUCT_CREDENTIALS = {
    ("grafana", "GF_SECURITY_ADMIN_USER"): "GRAFANA_ADMIN_USER",
    ("grafana", "GF_SECURITY_ADMIN_PASSWORD"): "GRAFANA_ADMIN_PASSWORD",
    ("grafana", "CLICKHOUSE_GRAFANA_PASSWORD"): "CLICKHOUSE_GRAFANA_PASSWORD",
    ("minio", "MINIO_ROOT_USER"): "MINIO_ROOT_USER",
    ("minio", "MINIO_ROOT_PASSWORD"): "MINIO_ROOT_PASSWORD",
    ("minio-init", "S3_ACCESS_KEY_ID"): "S3_ACCESS_KEY_ID",
    ("minio-init", "S3_SECRET_ACCESS_KEY"): "S3_SECRET_ACCESS_KEY",
    ("iceberg-rest", "AWS_SECRET_ACCESS_KEY"): "S3_SECRET_ACCESS_KEY",
    ("prefect-db", "POSTGRES_PASSWORD"): "PREFECT_DB_PASSWORD",
    ("prefect-db", "K2_OFFLOAD_DB_PASSWORD"): "K2_OFFLOAD_DB_PASSWORD",
    ("prefect-server", "PREFECT_SERVER_API_AUTH_STRING"): "PREFECT_AUTH_STRING",
    ("prefect-worker", "PREFECT_API_AUTH_STRING"): "PREFECT_AUTH_STRING",
    ("prefect-worker", "K2_ICEBERG_S3_SECRET_ACCESS_KEY"): "S3_SECRET_ACCESS_KEY",
    ("clickhouse", "CLICKHOUSE_INGEST_PASSWORD"): "CLICKHOUSE_INGEST_PASSWORD",
    ("clickhouse", "CLICKHOUSE_OFFLOAD_PASSWORD"): "CLICKHOUSE_OFFLOAD_PASSWORD",
    ("clickhouse", "CLICKHOUSE_GRAFANA_PASSWORD"): "CLICKHOUSE_GRAFANA_PASSWORD",
    ("clickhouse", "CLICKHOUSE_EXPORTER_PASSWORD"): "CLICKHOUSE_EXPORTER_PASSWORD",
    ("clickhouse", "S3_SECRET_ACCESS_KEY"): "S3_SECRET_ACCESS_KEY",
}
#: switches whose shipped default opens a door (e.g. POSTGRES_HOST_AUTH_METHOD=trust takes no password)
SWITCHES = {
    ("grafana", "GF_USERS_ALLOW_SIGN_UP"): "false",
    ("grafana", "GF_AUTH_ANONYMOUS_ENABLED"): "false",
    ("clickhouse", "CLICKHOUSE_SKIP_USER_SETUP"): "1",  # the image would otherwise (re)write `default`
}
FORBIDDEN_ENV = {"POSTGRES_HOST_AUTH_METHOD", "CLICKHOUSE_DEFAULT_ACCESS_MANAGEMENT", "GF_AUTH_DISABLE_LOGIN_FORM"}


# -- docker-compose.v2.yml ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resolved(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, str]]:
    """The resolved compose model with a distinct random value in every empty (secret) .env entry, and
    those values by variable."""
    example = parse_env_file(ENV_EXAMPLE.read_text())
    placeholders = {k: f"{k.lower()}-{secrets.token_hex(8)}" for k, v in example.items() if not v}
    env_file = tmp_path_factory.mktemp("sec") / ".env"
    env_file.write_text("".join(f"{k}={placeholders.get(k, v)}\n" for k, v in example.items()))
    base = (COMPOSE_BINARY, "--project-directory", REPO, "--env-file", env_file, "-f", COMPOSE_FILE, "config")
    return json.loads(run(*base, "--format", "json").stdout), placeholders


def credential_problems(config: dict[str, Any], placeholders: dict[str, str]) -> list[str]:
    """Credentials that do not come from .env, and secrets that reach a command line."""
    values = set(placeholders.values())
    problems = []
    for name, service in config["services"].items():
        for key, raw in (service.get("environment") or {}).items():
            value = str(raw or "")
            if SECRET_NAME.search(key) and value not in values:
                problems.append(f"{name}: {key} is not a value from .env")
            password = urlsplit(value).password if "://" in value else None
            if password is not None and password not in values:
                problems.append(f"{name}: {key} is a URL with a password not from .env")
        argv = [*(service.get("command") or []), *(service.get("entrypoint") or []),
                *((service.get("healthcheck") or {}).get("test") or [])]  # fmt: skip
        problems += [f"{name}: a secret is on a command line" for v in values if any(v in str(a) for a in argv)]
    return problems


def test_every_credential_in_compose_comes_from_env(resolved: tuple[dict[str, Any], dict[str, str]]) -> None:
    config, placeholders = resolved
    assert credential_problems(config, placeholders) == []
    services = config["services"]
    for (service, key), variable in PRODUCT_CREDENTIALS.items():
        assert services[service]["environment"].get(key) == placeholders[variable], (service, key)
    for (service, key), value in SWITCHES.items():
        assert services[service]["environment"].get(key) == value, (service, key)
    assert [(n, k) for n, s in services.items() for k in s.get("environment") or {} if k in FORBIDDEN_ENV] == []


def test_env_example_ships_placeholders_only_for_exactly_the_required_variables() -> None:
    """Empty in .env.example <=> required with ${VAR:?...} in compose: no secret can be left unset or defaulted."""
    example = parse_env_file(ENV_EXAMPLE.read_text())
    text = "\n".join(line for line in COMPOSE_FILE.read_text().splitlines() if not line.lstrip().startswith("#"))
    required = set(re.findall(r"\$\{([A-Za-z_]\w*):\?", text))
    assert {k for k, v in example.items() if not v} == required
    assert {k for k in required if SECRET_NAME.search(k)} == required  # the lint treats each as a secret


def test_credential_check_reports_literals_and_defaults(resolved: tuple[dict[str, Any], dict[str, str]]) -> None:
    config, placeholders = copy.deepcopy(resolved[0]), resolved[1]
    services = config["services"]
    services["prefect-db"]["environment"]["POSTGRES_PASSWORD"] = "a-literal-nobody-guesses"
    services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"] = "admin"
    worker = services["prefect-worker"]["environment"]
    worker["K2_OFFLOAD_STATE_URL"] = "postgresql+psycopg2://k2_offload:hunter2@prefect-db:5432/k2_offload"
    services["minio"]["healthcheck"]["test"] = ["CMD", "mc", "--password", placeholders["MINIO_ROOT_PASSWORD"]]
    assert sorted(credential_problems(config, placeholders)) == [
        "grafana: GF_SECURITY_ADMIN_PASSWORD is not a value from .env",
        "minio: a secret is on a command line",
        "prefect-db: POSTGRES_PASSWORD is not a value from .env",
        "prefect-worker: K2_OFFLOAD_STATE_URL is a URL with a password not from .env",
    ]


# -- ClickHouse users ----------------------------------------------------------------------------------------

READS = {"SELECT", "SHOW", "READ", "NAMED COLLECTION"}
WRITES = {"INSERT", "ALTER", "CREATE DATABASE", "CREATE TABLE", "CREATE VIEW", "DROP TABLE", "DROP VIEW",
          "OPTIMIZE", "TRUNCATE", "WRITE"}  # fmt: skip
#: where each role may write; nobody else writes anywhere
WRITABLE = {
    "k2_ingest": {"k2.*", "KAFKA"},  # the schema it migrates, and Kafka engine tables
    "k2_offload": {"cold.*", "k2.silver_trades_all"},  # the cold tables, and the hot+cold view
}
#: what each role may read: databases of K2's own, never system.* or *.*; sources only where needed
READABLE = {
    "k2_ingest": {"k2.*", "KAFKA"},
    "k2_offload": {"k2.*", "cold.*", "S3", "k2_s3"},
    "k2_grafana": {"k2.*", "cold.*"},
    "k2_exporter": {"k2.*"},
}
_GRANT = re.compile(r"^GRANT (?P<privileges>[A-Z ,]+?) ON (?P<target>[\w.*]+)$")
_AUTH = {"password", "password_sha256_hex", "password_double_sha1_hex", "no_password", "ldap", "kerberos",
         "ssl_certificates", "ssh_keys", "http_authentication"}  # fmt: skip


def grant_problems(user: str, query: str) -> list[str]:
    """What is wrong with one ``<grants><query>`` of ``user`` under the policy above."""
    match = _GRANT.match(" ".join(query.split()))
    if match is None:  # WITH GRANT OPTION, several ON clauses, column lists: review by hand, then extend
        return [f"{user}: {query!r} is not a plain GRANT ... ON ..."]
    target = match.group("target")
    problems = []
    writable = WRITABLE.get(user, set())
    for privilege in (p.strip() for p in match.group("privileges").split(",")):
        if privilege not in READS | WRITES:
            problems.append(f"{user}: holds {privilege} on {target}, a privilege outside the policy")
        elif target not in (writable if privilege in WRITES else READABLE.get(user, set()) | writable):
            problems.append(f"{user}: may {privilege} on {target}")
    return problems


def test_clickhouse_has_no_login_without_a_password_from_env() -> None:
    users = {user.tag: user for user in ET.parse(USERS_XML).getroot().find("users")}  # type: ignore[union-attr]
    # the image's users.xml defines `default` with an empty password: k2-users.xml removes it outright
    default = users.pop("default")
    assert default.get("remove") is not None and len(default) == 0 and not (default.text or "").strip()
    sources = {}
    for name, user in users.items():
        auth = [e for e in user if e.tag in _AUTH]
        assert [(e.tag, e.text, sorted(e.attrib)) for e in auth] == [("password", None, ["from_env"])], name
        sources[name] = auth[0].get("from_env")
    assert len(set(sources.values())) == len(sources), f"roles share a password: {sources}"


def test_clickhouse_roles_hold_least_privilege() -> None:
    users = ET.parse(USERS_XML).getroot().find("users")
    assert users is not None
    grants = {u.tag: [q.text or "" for q in u.iterfind("grants/query")] for u in users if u.get("remove") is None}
    assert set(grants) == set(READABLE)
    assert [p for user, queries in grants.items() for q in queries for p in grant_problems(user, q)] == []
    # the one named collection a role may use is the S3 credential collection of config.d
    assert ET.parse(SERVER_XML).getroot().find("named_collections/k2_s3") is not None


def test_grant_policy_reports_excess() -> None:
    assert grant_problems("k2_grafana", "GRANT INSERT ON k2.*") == ["k2_grafana: may INSERT on k2.*"]
    assert grant_problems("k2_ingest", "GRANT INSERT ON cold.*") == ["k2_ingest: may INSERT on cold.*"]
    assert grant_problems("k2_exporter", "GRANT SELECT ON system.*") == ["k2_exporter: may SELECT on system.*"]
    assert grant_problems("k2_offload", "GRANT SELECT, WRITE ON S3") == ["k2_offload: may WRITE on S3"]
    assert grant_problems("k2_ingest", "GRANT ALL ON *.*") == [
        "k2_ingest: holds ALL on *.*, a privilege outside the policy"
    ]
    assert grant_problems("k2_ingest", "GRANT SELECT ON k2.* WITH GRANT OPTION") == [
        "k2_ingest: 'GRANT SELECT ON k2.* WITH GRANT OPTION' is not a plain GRANT ... ON ..."
    ]
