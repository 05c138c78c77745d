"""What `docker compose config` accepts but K2 does not: checks over the resolved (``--format json``) model.

Each check returns human-readable problems; an empty list means the file passes.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

RESTART = re.compile(r"^(no|always|unless-stopped|on-failure(:\d+)?)$")
PINNED_TAG = re.compile(r"^[\w.-]*\d[\w.-]*$")  # a version, not "latest"/"stable"
SECRET_NAME = re.compile(r"PASSWORD|SECRET|AUTH_STRING|ACCESS_KEY|ROOT_USER|ADMIN_USER")
DEFAULT_CREDENTIALS = {"admin", "password", "minioadmin", "prefect", "postgres", "changeme", "secret", "default"}
STATEFUL = {"redpanda", "clickhouse", "prefect-db", "minio", "iceberg-rest", "prometheus", "alertmanager", "grafana"}


def _services(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(config["services"])


def restart_policies(config: dict[str, Any]) -> list[str]:
    problems = []
    one_shots = {n for n, s in _services(config).items() if s.get("restart", "no") == "no"}
    awaited = {
        dep: cond["condition"]
        for s in _services(config).values()
        for dep, cond in (s.get("depends_on") or {}).items()
        if dep in one_shots
    }
    for name, service in _services(config).items():
        restart = service.get("restart")
        if restart is None:
            problems.append(f"{name}: no restart policy")
        elif not RESTART.match(str(restart)):
            problems.append(f"{name}: restart {restart!r} is not no|always|unless-stopped|on-failure[:N]")
    for name in sorted(one_shots):
        if awaited.get(name) != "service_completed_successfully":
            problems.append(f"{name}: restart 'no' but nothing waits for it with service_completed_successfully")
    return problems


def healthchecks(config: dict[str, Any]) -> list[str]:
    problems = []
    services = _services(config)

    def healthy(name: str) -> bool:
        check = services[name].get("healthcheck") or {}
        return bool(check.get("test")) and not check.get("disable") and check["test"][0] != "NONE"

    for name, service in services.items():
        if service.get("restart", "no") != "no" and not healthy(name):
            problems.append(f"{name}: long-running service without a healthcheck")
        for dep, cond in (service.get("depends_on") or {}).items():
            if cond.get("condition") == "service_healthy" and not healthy(dep):
                problems.append(f"{name}: waits for {dep} to be healthy, but {dep} has no healthcheck")
            if cond.get("condition") == "service_started":
                problems.append(f"{name}: depends on {dep} without a health or completion condition")
    return problems


def pinned_images(config: dict[str, Any]) -> list[str]:
    problems = []
    for name, service in _services(config).items():
        image = service.get("image", "")
        if "@sha256:" in image:
            continue
        tag = image.rsplit("/", 1)[-1].partition(":")[2]
        if not image or not tag or not PINNED_TAG.match(tag):
            problems.append(f"{name}: image {image!r} is not pinned to a version")
    return problems


def memory_limits(config: dict[str, Any]) -> list[str]:
    problems = []
    for name, service in _services(config).items():
        limit = ((service.get("deploy") or {}).get("resources") or {}).get("limits", {}).get("memory")
        if not (limit or service.get("mem_limit")):
            problems.append(f"{name}: no memory limit")
    return problems


def host_ports(config: dict[str, Any]) -> list[str]:
    problems = []
    used: Counter[tuple[str, str]] = Counter()
    owner: dict[tuple[str, str], list[str]] = {}
    for name, service in _services(config).items():
        for port in service.get("ports") or []:
            if not port.get("published"):
                continue
            host_ip = port.get("host_ip", "")
            if host_ip != "127.0.0.1":
                problems.append(f"{name}: port {port['published']} published on {host_ip or 'all interfaces'}")
            # whatever the address: 0.0.0.0 collides with 127.0.0.1 on the same port
            key = (port["published"], port.get("protocol", "tcp"))
            used[key] += 1
            owner.setdefault(key, []).append(name)
    problems += [f"host port {k[0]}/{k[1]} published by {', '.join(owner[k])}" for k, n in used.items() if n > 1]
    return problems


def named_volumes(config: dict[str, Any]) -> list[str]:
    declared = set(config.get("volumes") or {})
    problems = []
    for name in sorted(STATEFUL & set(_services(config))):
        mounts = [v for v in _services(config)[name].get("volumes") or [] if v["type"] == "volume"]
        if not mounts:
            problems.append(f"{name}: keeps state but has no named volume")
        problems += [f"{name}: volume {v['source']} is not declared" for v in mounts if v["source"] not in declared]
    return problems


def variables(compose_text: str, env_example: dict[str, str]) -> list[str]:
    """Every ${VAR} documented in .env.example (and the reverse); secrets required, never defaulted."""
    compose_text = "\n".join(line for line in compose_text.splitlines() if not line.lstrip().startswith("#"))
    used = {m.group(1): m.group(2) or "" for m in re.finditer(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)([:?-][^}]*)?\}",
                                                             compose_text)}  # fmt: skip
    problems = [f"${{{v}}} is used but not in .env.example" for v in sorted(set(used) - set(env_example))]
    problems += [f"{v} is in .env.example but not used" for v in sorted(set(env_example) - set(used))]
    for var in sorted(v for v in used if SECRET_NAME.search(v)):
        for match in re.finditer(r"\$\{" + var + r"([^}]*)\}", compose_text):
            if not match.group(1).startswith(":?"):
                problems.append(f"secret {var} is used as ${{{var}{match.group(1)}}}: require it with :?")
        if env_example.get(var):
            problems.append(f".env.example ships a value for secret {var}")
    return problems


def default_credentials(config: dict[str, Any]) -> list[str]:
    """No service environment carries a well-known credential or a literal secret."""
    problems = []
    for name, service in _services(config).items():
        env = service.get("environment") or {}
        for key, value in env.items():
            if value is not None and SECRET_NAME.search(key) and str(value).lower() in DEFAULT_CREDENTIALS:
                problems.append(f"{name}: {key} is a default credential ({value!r})")
        if str(env.get("GF_AUTH_ANONYMOUS_ENABLED", "false")).lower() != "false":
            problems.append(f"{name}: Grafana anonymous access is enabled")
        if "GF_SECURITY_ADMIN_USER" in env and "GF_SECURITY_ADMIN_PASSWORD" not in env:
            problems.append(f"{name}: Grafana admin password left at its default")
    return problems


def lint(config: dict[str, Any], compose_text: str, env_example: dict[str, str]) -> list[str]:
    return [
        *restart_policies(config),
        *healthchecks(config),
        *pinned_images(config),
        *memory_limits(config),
        *host_ports(config),
        *named_volumes(config),
        *variables(compose_text, env_example),
        *default_credentials(config),
    ]


def parse_env_file(text: str) -> dict[str, str]:
    """KEY=value lines of a dotenv file, inline `# comments` dropped."""
    out = {}
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = re.sub(r"\s+#.*$", "", value).strip()
    return out
