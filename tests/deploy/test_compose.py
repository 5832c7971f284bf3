"""docker-compose.yml against the Compose Specification JSON schema (vendored, offline) and against the
Dockerfile and the code: ports, volume, environment and healthcheck must agree.

compose-spec.json is the Compose Specification's schema (github.com/compose-spec/compose-spec,
schema/compose-spec.json), Apache-2.0 (compose-spec.LICENSE beside it), taken unchanged from the PyPI package
check-jsonschema 0.39.0 (check_jsonschema/builtin_schemas/vendor/compose-spec.json); its sha256 is pinned below
so that an edit shows. To update: `pip download --no-deps check-jsonschema`, copy the file, update the digest.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json

import pytest

from tests.deploy import deployfiles as df
from tests.deploy.deployfiles import ROOT, compose, compose_environment, compose_service, dockerfile

SCHEMA_SHA256 = "d549057ebc2925f39f62799eab0db7b9e2c18b35b6c00595199116da3ed10e64"


def test_vendored_schema_is_the_published_one() -> None:
    assert hashlib.sha256(df.COMPOSE_SCHEMA.read_bytes()).hexdigest() == SCHEMA_SHA256
    assert df.COMPOSE_SCHEMA.with_name("compose-spec.LICENSE").read_text().lstrip().startswith("Apache License")


def test_compose_file_matches_the_compose_specification() -> None:
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is not installed (pip install jsonschema)")
    schema = json.loads(df.COMPOSE_SCHEMA.read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator = validator_class(schema)
    errors = sorted(validator.iter_errors(compose()), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)
    # and the validator does reject a misspelt key, so the pass above means something
    broken = json.loads(json.dumps(compose()))
    broken["services"]["facerec"]["restrat"] = "always"
    assert list(validator.iter_errors(broken))


def test_builds_this_repo_with_restart_and_grace_period() -> None:
    service = compose_service()
    build = service["build"]
    assert (ROOT / build.get("context", ".")).resolve() == ROOT
    assert (ROOT / build.get("dockerfile", "Dockerfile")).resolve() == df.DOCKERFILE
    assert service["restart"] == "unless-stopped"
    assert service.get("stop_grace_period"), "give in-flight requests time to finish on stop"


def test_port_is_published_on_loopback_by_default() -> None:
    d = dockerfile()
    exposed = {p.split("/")[0] for ins in d.final.all("EXPOSE") for p in ins.args.split()}
    ports = compose_service()["ports"]
    assert len(ports) == 1
    host_ip, host_port, container_port = str(ports[0]).rsplit(":", 2)
    assert container_port in exposed == {compose_environment()["FACEREC_PORT"]}, (container_port, exposed)
    assert ipaddress.ip_address(host_ip).is_loopback, f"publish on 127.0.0.1 by default, not {host_ip}"
    assert host_port.isdigit()


def test_data_volume_is_the_images_volume_and_a_named_volume() -> None:
    d = dockerfile()
    image_volumes = {v for ins in d.final.all("VOLUME") for v in (ins.exec_form or ins.args.split())}
    mounts = [str(v).split(":") for v in compose_service()["volumes"]]
    env = compose_environment()
    data = env.get("FACEREC_DATA", d.final.env(d.global_args)["FACEREC_DATA"])
    named = {source: target for source, target, *_ in mounts}
    assert data in named.values(), f"nothing is mounted on the data dir {data}: {mounts}"
    source = next(s for s, t in named.items() if t == data)
    assert source in (compose().get("volumes") or {}), f"{source} is not a named volume of the compose file"
    assert data in image_volumes, f"the data dir {data} is not a VOLUME of the image ({image_volumes})"


def test_environment_names_real_settings_with_valid_values(monkeypatch: pytest.MonkeyPatch) -> None:
    env = compose_environment()
    unknown = {name for name in env if name.startswith("FACEREC_")} - df.known_variables()
    assert not unknown, f"docker-compose.yml sets FACEREC_* variables nothing reads: {sorted(unknown)}"
    assert all(name.startswith("FACEREC_") for name in env), "configuration is FACEREC_* variables only"
    from service.addresses import is_loopback
    from service.config import Settings

    d = dockerfile()
    for name, value in {**d.final.env(d.global_args), **env}.items():
        if name.startswith("FACEREC_"):
            monkeypatch.setenv(name, value)
    settings = Settings()  # raises on a value the service would refuse
    if not is_loopback(settings.host):
        # off loopback the server refuses to start without a key: the compose file must bootstrap one
        target = env.get("FACEREC_BOOTSTRAP_ADMIN_KEY_FILE", "")
        assert target == "-" or target.startswith(str(settings.data) + "/"), target


def test_healthcheck_probes_readyz_on_the_container_port() -> None:
    check = compose_service()["healthcheck"]
    test = check["test"]
    assert test[0] == "CMD" and test[1] == "python", test
    port, path = df.healthcheck_url_path(test[1:])
    assert path == "/readyz" and path in df.app_paths()
    assert port == compose_environment()["FACEREC_PORT"] or (port == "{port}" and "FACEREC_PORT" in " ".join(test))
    assert check.get("start_period"), "the model takes a while to load"
