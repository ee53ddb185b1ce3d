"""docker-compose.yaml, checked without a Docker engine.

Against the code (the variables it reads, its connection ids, where MapServer finds
mapfiles), the local stack (include/stack/env.sh: the compose file sets what it sets,
or says here why not) and the rules of issue 14: healthchecks and ordered start,
Airflow's migration first, shared secrets from .env, pinned images, volumes writable
by the user that writes them, no test tooling in the image.
"""

from __future__ import annotations

import ast
import configparser
import importlib.metadata
import importlib.util
import json
import re
from functools import cache
from pathlib import Path, PurePosixPath

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "include" / "docker"
COMPOSE_TEXT = (ROOT / "docker-compose.yaml").read_text()
COMPOSE = yaml.safe_load(COMPOSE_TEXT)
SERVICES: dict[str, dict] = COMPOSE["services"]
DOCKERFILE = (DOCKER / "Dockerfile").read_text()
ENV_SH = (ROOT / "include" / "stack" / "env.sh").read_text()

# env.sh sets these, the code or Airflow reads them, and the compose file leaves them out:
# the reason for each.
LOCAL_STACK_ONLY = {
    "LS4_AIRFLOW_PORT": "the ls4 command's default API address; the containers set LS4_AIRFLOW_URL",
    "AIRFLOW_HOME": "the image's own, /opt/airflow",
    "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": "moved off 8793 so that two local stacks can share a host; "
                                                "each container has a network of its own",
    "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": "as the worker's log server port",
}
# The first line of requirements.txt's tooling, which the image must not have.
TOOLING_MARKER = "# test and local-stack tooling"
# The pools that ls4's tasks name (pool=...).
POOLS = ("ls4_s3", "ls4_postgis")

INTERPOLATION = re.compile(r"(?<!\$)\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
LS4_NAME = re.compile(r"LS4_[A-Z0-9_]+")
AIRFLOW_OPTION = re.compile(r"AIRFLOW__(?P<section>[A-Z0-9_]+?)__(?P<key>[A-Z0-9_]+)")


# --- what the compose file says ------------------------------------------------------------

def environment(service: str) -> dict[str, str]:
    env = SERVICES[service].get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {name: str(value) for name, value in env.items()}


def ls4_image_services() -> set[str]:
    """Services that run the image built from include/docker/Dockerfile."""
    built = {spec["image"] for spec in SERVICES.values() if "build" in spec}
    return {name for name, spec in SERVICES.items() if spec.get("image") in built}


def airflow_components() -> set[str]:
    """The services that run an Airflow component (they share the Airflow environment)."""
    return {name for name in ls4_image_services() if "AIRFLOW__CORE__EXECUTOR" in environment(name)}


def command_text(service: str) -> str:
    spec = SERVICES[service]
    parts = []
    for key in ("entrypoint", "command"):
        value = spec.get(key) or []
        parts.extend(value if isinstance(value, list) else [value])
    return " ".join(map(str, parts))


def one_shot(service: str) -> bool:
    return SERVICES[service].get("restart") == "no"


def depends_on(service: str) -> dict:
    return SERVICES[service].get("depends_on") or {}


def variable(value: str) -> str | None:
    """The variable of a value that is one interpolation, e.g. ``${LS4_PG_PASSWORD:?...}``."""
    match = INTERPOLATION.fullmatch(value)
    return match["name"] if match else None


def meaning(value: str) -> str:
    """A value, with a lone interpolation reduced to its variable (as the same secret is
    written with and without its error message)."""
    name = variable(value)
    return f"${name}" if name else value


def mounts(service: str) -> list[tuple[str | None, str, bool]]:
    """(source, target, read-only) of the service's volumes; source None: an anonymous volume."""
    result = []
    for entry in SERVICES[service].get("volumes") or []:
        if isinstance(entry, dict):
            result.append((entry.get("source"), entry["target"], bool(entry.get("read_only"))))
            continue
        parts = entry.split(":")
        if len(parts) == 1:
            result.append((None, parts[0], False))
        else:
            result.append((parts[0], parts[1], len(parts) > 2 and "ro" in parts[2].split(",")))
    return result


def is_bind(source: str | None) -> bool:
    return source is not None and source.startswith((".", "/", "~"))


def uid(service: str) -> int:
    user = SERVICES[service].get("user")
    assert user is not None, f"{service} must say which user it runs as (user:)"
    return int(str(user).split(":")[0])


# --- what the code and the local stack read and set ----------------------------------------

def python_sources() -> list[Path]:
    return [*sorted((ROOT / "plugins").rglob("*.py")), *sorted((ROOT / "dags").glob("*.py"))]


@cache
def ls4_variables_the_code_reads() -> set[str]:
    names = set()
    for path in python_sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and LS4_NAME.fullmatch(node.value):
                names.add(node.value)
    return names


@cache
def settings_variables() -> dict[str, str]:
    """Each Settings field and the variable ``Settings.from_env`` reads it from."""
    tree = ast.parse((ROOT / "plugins" / "ls4_ops" / "settings.py").read_text())
    from_env = next(node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name == "from_env")
    # from_env reads some variables into locals first (bucket = environ.get("LS4_BUCKET", ...)).
    local = {node.targets[0].id: node.value for node in from_env.body
             if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)}
    fields = {}
    for call in ast.walk(from_env):
        if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "cls":
            for keyword in call.keywords:
                value = local.get(keyword.value.id, keyword.value) if isinstance(keyword.value, ast.Name) \
                    else keyword.value
                fields[keyword.arg] = next(node.value for node in ast.walk(value)
                                           if isinstance(node, ast.Constant) and isinstance(node.value, str)
                                           and LS4_NAME.fullmatch(node.value))
    return fields


def settings_default(field: str) -> str:
    tree = ast.parse((ROOT / "plugins" / "ls4_ops" / "settings.py").read_text())
    settings = next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "Settings")
    return next(ast.literal_eval(node.value) for node in settings.body
                if isinstance(node, ast.AnnAssign) and node.target.id == field)


def connection_variable(conn_id_field: str) -> str:
    return f"AIRFLOW_CONN_{settings_default(conn_id_field).upper()}"


def layout_constant(name: str) -> str:
    tree = ast.parse((ROOT / "plugins" / "ls4_ops" / "layout.py").read_text())
    return next(ast.literal_eval(node.value) for node in tree.body
                if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets))


@cache
def local_stack_variables() -> set[str]:
    """The LS4_* and AIRFLOW_* variables env.sh sets."""
    names = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*):?=", ENV_SH))
    names |= set(re.findall(r"^(?:export )?([A-Z][A-Z0-9_]*)=", ENV_SH, re.MULTILINE))
    return {name for name in names if name.startswith(("LS4_", "AIRFLOW_"))}


def airflow_file(module_path: str) -> Path | None:
    """The file of an ``airflow.*`` module, found without importing Airflow."""
    locations = importlib.util.find_spec("airflow").submodule_search_locations
    return next((Path(location, *module_path.split("/")) for location in locations
                 if Path(location, *module_path.split("/")).exists()), None)


@cache
def airflow_options() -> set[tuple[str, str]]:
    """(section, option) of Airflow's configuration: the core's, the installed providers' and
    the fallback defaults the core keeps for providers (all read, none imported)."""
    templates = airflow_file("config_templates")
    core = yaml.load((templates / "config.yml").read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    options = {(section, option) for section, spec in core.items() for option in spec["options"]}
    fallback = configparser.ConfigParser(interpolation=None)
    fallback.read(templates / "provider_config_fallback_defaults.cfg")
    options |= {(section, option) for section in fallback.sections() for option in fallback[section]}
    for entry in importlib.metadata.entry_points(group="apache_airflow_provider"):
        module = entry.value.split(":")[0].removeprefix("airflow.").replace(".", "/") + ".py"
        tree = ast.parse(airflow_file(module).read_text())
        info = next(ast.literal_eval(node.value) for node in ast.walk(tree) if isinstance(node, ast.Return))
        options |= {(section, option) for section, spec in info.get("config", {}).items()
                    for option in spec["options"]}
    return options


def requirement_name(line: str) -> str:
    return re.sub(r"[-_.]+", "-", re.split(r"[\[<>=!~;\s]", line.strip(), maxsplit=1)[0]).lower()


def requirements() -> tuple[set[str], set[str]]:
    """The runtime and the tooling requirements of requirements.txt (split at TOOLING_MARKER)."""
    text = (ROOT / "requirements.txt").read_text()
    assert TOOLING_MARKER in text, f"requirements.txt must keep its tooling after {TOOLING_MARKER!r}"
    runtime, tooling = text.split(TOOLING_MARKER, 1)

    def names(part: str) -> set[str]:
        return {requirement_name(line) for line in part.splitlines() if line.strip() and not line.startswith("#")}

    return names(runtime), names(tooling)


def lock(path: Path) -> dict[str, tuple[str, set[str]]]:
    """A uv lock file: package -> (version, the packages or files it is there for)."""
    packages: dict[str, tuple[str, set[str]]] = {}
    current = None
    in_via = False
    for line in path.read_text().splitlines():
        if match := re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line):
            current = requirement_name(match[1])
            packages[current] = (match[2], set())
            in_via = False
        elif current and (match := re.match(r"\s+# via(?: (.+))?$", line)):
            in_via = match[1] is None
            if match[1]:
                packages[current][1].add(match[1].strip())
        elif current and in_via and (match := re.match(r"\s+#\s+(.+)$", line)):
            packages[current][1].add(match[1].strip())
        else:
            in_via = False
    return {name: (version, {requirement_name(via) if not via.startswith("-") else via for via in vias})
            for name, (version, vias) in packages.items()}


def needed_by(packages: dict[str, tuple[str, set[str]]], top: set[str]) -> set[str]:
    """``top`` and every package of the lock that one of them needs, directly or not."""
    needed = set(top)
    while True:
        more = {name for name, (_, vias) in packages.items() if name not in needed and vias & needed}
        if not more:
            return needed
        needed |= more


def dockerignore_pattern(pattern: str) -> re.Pattern:
    """A .dockerignore pattern as a regular expression: ``*`` and ``?`` within a path part,
    ``**`` across parts."""
    regex, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            regex, i = regex + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            regex, i = regex + ".*", i + 2
        else:
            regex, i = regex + {"*": "[^/]*", "?": "[^/]"}.get(pattern[i], re.escape(pattern[i])), i + 1
    return re.compile(regex)


def dockerignore_admits(path: str) -> bool:
    """Whether the build context keeps ``path``: the last .dockerignore pattern that matches
    it or one of its parent folders decides (Docker's rule)."""
    candidates = [path] + [str(parent) for parent in PurePosixPath(path).parents if str(parent) != "."]
    admitted = True
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            pattern = dockerignore_pattern(line.strip().lstrip("!").rstrip("/"))
            if any(pattern.fullmatch(candidate) for candidate in candidates):
                admitted = line.startswith("!")
    return admitted


# --- the tests -------------------------------------------------------------------------------

def test_compose_file_parses_into_the_services_of_the_deployment():
    assert {"postgis", "redis", "minio", "minio-init", "volume-init", "airflow-init", "airflow-apiserver",
            "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer", "airflow-worker",
            "airflow-worker-raster", "mapfile-sync", "mapserver"} <= set(SERVICES)


def test_airflow_runs_the_celery_executor_with_separate_components_and_a_worker_per_queue():
    components = airflow_components()
    assert {environment(name)["AIRFLOW__CORE__EXECUTOR"] for name in components} == {"CeleryExecutor"}
    commands = {command_text(name) for name in components}
    for component in ("api-server", "scheduler", "dag-processor", "triggerer"):
        assert sum(component in command.split() for command in commands) == 1, component
    queues = {re.search(r"--queues (\S+)", command)[1] for command in commands if "celery worker" in command}
    assert queues == {"default", "raster"}


def test_every_ls4_variable_a_service_sets_is_one_the_code_reads():
    reads = ls4_variables_the_code_reads()
    for service in SERVICES:
        unread = {name for name in environment(service) if name.startswith("LS4_")} - reads
        assert not unread, f"{service} sets variables no code reads: {sorted(unread)}"


def test_every_airflow_variable_is_an_airflow_option_or_an_ls4_connection():
    options = airflow_options()
    connections = {connection_variable("s3_conn_id"), connection_variable("postgis_conn_id")}
    for service in ls4_image_services():
        for name in environment(service):
            if not name.startswith("AIRFLOW_"):
                continue
            option = AIRFLOW_OPTION.fullmatch(name)
            if option:
                assert (option["section"].lower(), option["key"].lower()) in options, f"{service}: {name}"
            else:
                assert name in connections, f"{service}: {name} is neither an option nor a connection ls4 uses"


def test_airflow_services_set_every_variable_the_local_stack_sets():
    reads = ls4_variables_the_code_reads()
    options = airflow_options()

    def read_by_code_or_airflow(name: str) -> bool:
        option = AIRFLOW_OPTION.fullmatch(name)
        return (name in reads or name.startswith("AIRFLOW_CONN_") or name == "AIRFLOW_HOME"
                or bool(option) and (option["section"].lower(), option["key"].lower()) in options)

    local = {name for name in local_stack_variables() if read_by_code_or_airflow(name)}
    assert set(LOCAL_STACK_ONLY) <= local, "LOCAL_STACK_ONLY names a variable env.sh does not set"
    for service in airflow_components():
        missing = local - set(environment(service)) - set(LOCAL_STACK_ONLY)
        assert not missing, f"{service} lacks what the local stack sets: {sorted(missing)}"
        assert not set(LOCAL_STACK_ONLY) & set(environment(service))


def test_connections_and_the_mapserver_service_file_are_built_from_the_ls4_variables():
    for service in ls4_image_services():
        env = environment(service)
        if connection_variable("s3_conn_id") in env:
            s3 = json.loads(env[connection_variable("s3_conn_id")])
            assert meaning(s3["login"]) == meaning(env.get("LS4_S3_ACCESS_KEY", s3["login"]))
            assert meaning(s3["password"]) == meaning(env.get("LS4_S3_SECRET_KEY", s3["password"]))
            assert s3["extra"]["endpoint_url"] == env.get("LS4_S3_ENDPOINT", s3["extra"]["endpoint_url"])
            assert s3["extra"]["region_name"] == env.get("LS4_S3_REGION", s3["extra"]["region_name"])
    service_file = configparser.ConfigParser()
    service_file.read(DOCKER / "pg_service.conf")
    for service in airflow_components():
        env = environment(service)
        postgis = json.loads(env[connection_variable("postgis_conn_id")])
        expected = {"host": env["LS4_PG_HOST"], "port": env["LS4_PG_PORT"], "login": env["LS4_PG_USER"],
                    "password": meaning(env["LS4_PG_PASSWORD"]), "schema": env["LS4_PG_DB"]}
        assert {key: meaning(str(postgis[key])) for key in expected} == expected
        section = service_file[env["LS4_PG_SERVICE"]]
        assert (section["host"], section["port"], section["dbname"], section["user"]) == \
            (env["LS4_PG_HOST"], env["LS4_PG_PORT"], env["LS4_PG_DB"], env["LS4_PG_USER"])
        assert env["AIRFLOW__LOGGING__REMOTE_LOG_CONN_ID"] == settings_default("s3_conn_id")
    assert meaning(environment("mapserver")["PGPASSWORD"]) == meaning(environment("airflow-worker")["LS4_PG_PASSWORD"])


def test_services_agree_on_the_value_of_each_variable():
    values: dict[str, dict[str, str]] = {}
    for service in SERVICES:
        for name, value in environment(service).items():
            values.setdefault(name, {})[service] = meaning(value)
    for name, by_service in values.items():
        assert len(set(by_service.values())) == 1, f"{name} differs between services: {by_service}"


def test_mapfile_sync_gets_the_settings_it_reads():
    source = (ROOT / "plugins" / "ls4_ops" / "mapfile_sync.py").read_text()
    variables = settings_variables()
    fields = set(re.findall(r"\bsettings\.([a-z_][a-z0-9_]*)", source))
    env = environment("mapfile-sync")
    assert connection_variable("s3_conn_id") in env
    assert {variables[field] for field in fields if field != "s3_conn_id"} <= set(env)
    assert command_text("mapfile-sync").split()[:3] == ["python", "-m", "ls4_ops.mapfile_sync"]


def test_images_are_pinned_to_a_version():
    references = [spec["image"] for spec in SERVICES.values() if "build" not in spec and spec.get("image")
                  not in {s.get("image") for s in SERVICES.values() if "build" in s}]
    references += re.findall(r"^FROM\s+(\S+)", DOCKERFILE, re.MULTILINE)
    for reference in references:
        name, _, tag = reference.partition("@")[0].rpartition(":")
        assert name and "/" not in tag, f"{reference} has no tag"
        assert tag != "latest" and re.search(r"\d", tag), f"{reference} is not pinned to a version"
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)[1]
    assert {spec["image"] for spec in SERVICES.values() if "build" in spec} == {f"ls4-airflow:{version}"}


def test_every_long_running_service_has_a_healthcheck():
    for name, spec in SERVICES.items():
        if one_shot(name):
            continue
        assert spec.get("restart") in ("always", "unless-stopped"), f"{name}: restart"
        assert spec.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


def test_depends_on_waits_for_health_or_completion():
    assert any(depends_on(name) for name in SERVICES)
    for name in SERVICES:
        assert isinstance(depends_on(name), dict), f"{name}: depends_on without conditions"
        for target, spec in depends_on(name).items():
            condition = spec["condition"]
            if condition == "service_healthy":
                assert SERVICES[target].get("healthcheck"), f"{name} waits for {target}, which has no healthcheck"
            else:
                assert condition == "service_completed_successfully", f"{name} -> {target}: {condition}"
                assert one_shot(target), f"{name} waits for {target} to complete, but it runs on"


def test_airflow_components_wait_for_the_migration():
    assert "airflow db migrate" in (DOCKER / "airflow-init.sh").read_text()
    assert "/opt/ls4/docker/airflow-init.sh" in command_text("airflow-init")
    assert one_shot("airflow-init")
    for name in airflow_components() - {"airflow-init"}:
        assert depends_on(name)["airflow-init"]["condition"] == "service_completed_successfully", name


def test_airflow_secrets_are_shared_and_come_from_the_env_file():
    required = {match["name"] for match in INTERPOLATION.finditer(COMPOSE_TEXT) if match["op"] == ":?"}
    written = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", (DOCKER / "make-env.sh").read_text(), re.MULTILINE))
    assert required <= written, f"make-env.sh does not write {sorted(required - written)}"
    for secret in ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API__SECRET_KEY"):
        values = {environment(name).get(secret) for name in airflow_components()}
        assert len(values) == 1 and variable(values.pop()) == secret, secret
        assert secret in required


def test_airflow_init_creates_the_pools_with_sizes_from_its_environment():
    script = (DOCKER / "airflow-init.sh").read_text()
    env = environment("airflow-init")
    for pool in POOLS:
        match = re.search(rf'airflow pools set {pool} "\$(\w+)"', script)
        assert match and match[1] in env, pool
        assert int(re.search(r":-(\d+)\}", env[match[1]])[1]) > 0


def test_minio_gets_no_acls_and_the_bucket_policy_and_buckets_at_start():
    for name in airflow_components():
        env = environment(name)
        assert env["LS4_PUBLIC_ACCESS"] == "policy" and env["LS4_APPLY_BUCKET_POLICY"] == "true"
    assert "bucket_policy.py" in (DOCKER / "airflow-init.sh").read_text()
    assert "check_policy" in (DOCKER / "bucket_policy.py").read_text()
    assert depends_on("airflow-init")["minio-init"]["condition"] == "service_completed_successfully"
    script = (DOCKER / "minio-init.sh").read_text()
    minio_init = environment("minio-init")
    log_bucket = environment("airflow-scheduler")["AIRFLOW__LOGGING__REMOTE_BASE_LOG_FOLDER"].removeprefix("s3://")
    assert minio_init["LS4_BUCKET"] == environment("airflow-scheduler")["LS4_BUCKET"]
    assert minio_init["LOG_BUCKET"] == log_bucket
    assert 'mc mb --ignore-existing "ls4-minio/$LS4_BUCKET" "ls4-minio/$LOG_BUCKET"' in script


def test_volumes_are_writable_by_the_user_that_writes_them():
    init_mounts = {source: target for source, target, _ in mounts("volume-init")}
    init_command = command_text("volume-init")
    assert uid("volume-init") == 0 and one_shot("volume-init")
    for name in SERVICES:
        for source, target, read_only in mounts(name):
            if is_bind(source):
                assert read_only, f"{name} may write into the checkout through {source}"
                continue
            if read_only or name == "volume-init":
                continue
            writer = uid(name)
            if writer == 0:
                continue
            if source is None:  # a volume of its own: it takes the owner of the image's folder
                assert name in ls4_image_services(), f"{name}: anonymous volume {target}"
                assert re.search(rf"install -d -o {writer} .*{re.escape(target)}$", DOCKERFILE, re.MULTILINE), \
                    f"the Dockerfile does not make {target} uid {writer}'s"
                continue
            assert source in init_mounts, f"volume {source} of {name} is not prepared by volume-init"
            assert re.search(rf"chown {writer}(:\d+)? {re.escape(init_mounts[source])}\b", init_command), \
                f"volume-init does not give {source} to uid {writer} ({name})"
            assert depends_on(name)["volume-init"]["condition"] == "service_completed_successfully"


def test_airflow_components_share_no_volume():
    for name in airflow_components():
        assert all(source is None for source, _, _ in mounts(name)), name


def test_mapserver_serves_the_synced_mapfiles_with_our_config_at_the_wms_path():
    env = environment("mapserver")
    mounted = {target: source for source, target, _ in mounts("mapserver")}
    assert mounted[env["MAPSERVER_CONFIG_FILE"]] == "./include/docker/mapserver.conf"
    assert mounted[env["PGSERVICEFILE"]] == "./include/docker/pg_service.conf"
    mapfile_folder = "/" + layout_constant("MAPFILE_PREFIX").rstrip("/")
    sync_dest = command_text("mapfile-sync").split("--dest ")[1].split()[0]
    sync_volume = {target: source for source, target, _ in mounts("mapfile-sync")}[sync_dest]
    assert mounted[mapfile_folder] == sync_volume
    pattern = re.search(r'MS_MAP_PATTERN "([^"]+)"', (DOCKER / "mapserver.conf").read_text())[1]
    assert env["MS_MAP_PATTERN"] == pattern and re.fullmatch(pattern, f"{mapfile_folder}/a_b_1.map")
    wms_path = re.sub(r"^http://[^/]+", "", environment("airflow-worker")["LS4_WMS_URL"])
    assert wms_path == env["MAPSERVER_BASE_PATH"] + "/"


def test_image_installs_the_runtime_requirements_only():
    assert re.search(r"pip install .*--require-hashes -r /opt/ls4/requirements.lock", DOCKERFILE)
    assert "COPY --chown=50000:0 include/docker/requirements.lock /opt/ls4/requirements.lock" in DOCKERFILE
    runtime, tooling = requirements()
    development = lock(ROOT / "requirements.lock")
    image = lock(DOCKER / "requirements.lock")
    runtime_needs = needed_by(development, runtime)
    tooling_only = needed_by(development, tooling) - runtime_needs
    assert tooling and not tooling_only & set(image), f"test tooling in the image: {sorted(tooling_only & set(image))}"
    assert runtime_needs <= set(image), f"the image lacks {sorted(runtime_needs - set(image))}: run `make lock`"
    assert {name: version for name, (version, _) in image.items()} == \
        {name: development[name][0] for name in image}, "the image's versions differ from requirements.lock's"


@pytest.mark.parametrize("path, admitted", [
    (".env", False), (".venv/bin/python", False), (".state/registry.json", False), (".git/HEAD", False),
    ("tests/unit/test_compose.py", False), ("benchmarks/out/x.tif", False), ("plugins/ls4_ops/__pycache__/a.pyc", False),
    ("plugins/ls4_ops/settings.py", True), ("dags/ls4_discovery.py", True), ("include/docker/Dockerfile", True),
])
def test_build_context_keeps_the_image_sources_and_leaves_out_secrets_state_and_tests(path, admitted):
    assert dockerignore_admits(path) is admitted


def test_build_context_has_everything_the_dockerfile_copies():
    for line in re.findall(r"^COPY (?:--\S+ )*(.+) \S+$", DOCKERFILE, re.MULTILINE):
        for source in line.split():
            assert (ROOT / source).exists() and dockerignore_admits(source.rstrip("/") + "/x"
                                                                    if (ROOT / source).is_dir() else source), source
