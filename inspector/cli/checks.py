"""What ``check-config`` and ``run`` check before a daemon starts: galleries, the parts database, the review
page, MQTT, security and OPC UA, each problem one line naming its field."""

from __future__ import annotations

import os

from inspector.config.load import gallery_field
from inspector.config.root import InspectorConfig


def gallery_problems(config: InspectorConfig) -> list[str]:
    """What the galleries say against a daemon configuration: unreadable manifests, settings they decide."""
    from inspector.model.gallery import read_manifest
    from inspector.model.header import GalleryError
    from inspector.model.settings import daemon_config_conflicts

    problems: list[str] = []
    readable = {}
    for name, path in config.product_galleries().items():
        if path in readable:
            continue
        try:
            readable[path] = read_manifest(path)
        except GalleryError as exc:
            problems.append(f"{gallery_field(config, name)}: {exc}")
            continue
        if readable[path].calibration is None:
            problems.append(
                f"{gallery_field(config, name)}: gallery {path} (product {name}) is not calibrated and cannot "
                f"serve: run `inspector gallery calibrate --gallery {path}`"
            )
    if problems:
        return problems
    return daemon_config_conflicts(config, lambda path: readable[path])


def parts_problems(config: InspectorConfig) -> list[str]:
    """What ``[parts]`` says: a URL SQLAlchemy cannot read, an unreadable password file, no spool folder."""
    from inspector.records.store import PartsConfigError, connection_url, database_url, spool_folder

    url = database_url(config.parts, os.environ)
    if url is None:
        return []
    try:
        spool_folder(config.parts, os.environ, url)
        connection_url(config.parts, url)  # reads the URL and the password file; connects to nothing
    except PartsConfigError as exc:
        return [str(exc)]
    return []


def review_problems(config: InspectorConfig) -> list[str]:
    """What ``[review]`` needs when enabled: the live view's server, the parts database, a users file with roles."""
    from inspector.core.passwords import UsersError
    from inspector.outputs.sessions import read_review_users
    from inspector.records.store import database_url

    review = config.review
    if not review.enabled or review.users_file is None:
        return []
    problems = []
    if not config.liveview.enabled:
        problems.append("review.enabled: the review page is served by the live view: set [liveview] enabled")
    if database_url(config.parts, os.environ) is None:
        problems.append("review.enabled: judgments are kept in the parts database: set [parts] url")
    try:
        read_review_users(review.users_file)
    except UsersError as exc:
        problems.append(str(exc))
    return problems


def mqtt_problems(config: InspectorConfig) -> list[str]:
    """What ``[mqtt]`` says when enabled: a password file or a TLS file (CA, certificate, key) that cannot be
    used; connects to nothing (a broker that is down or refuses the login is not a configuration problem)."""
    from inspector.outputs.mqtt_client import connection_problems

    return connection_problems(config.mqtt)


def security_problems(config: InspectorConfig) -> list[str]:
    """What ``[security]`` says: key files that cannot be used, galleries without an allowed signature."""
    from inspector.bus.curve import load_curve_server
    from inspector.core.keyfiles import KeyFileError
    from inspector.model.gallery import read_gallery_hash
    from inspector.model.header import GalleryError
    from inspector.model.signing import load_signers, verify_gallery

    sec = config.security
    problems: list[str] = []
    try:
        load_curve_server(sec.curve_server_secret_key, sec.curve_allowed_clients)
    except KeyFileError as exc:
        problems.append(f"security: {exc}")
    try:
        signers = load_signers(sec.gallery_signers)
    except KeyFileError as exc:
        return [*problems, f"security.gallery_signers: {exc}"]
    for name, path in config.product_galleries().items() if signers else ():
        try:
            verify_gallery(path, read_gallery_hash(path), signers)
        except GalleryError as exc:
            problems.append(f"{gallery_field(config, name)}: {exc}")
    return problems


def opcua_problems(config: InspectorConfig) -> list[str]:
    """What the OPC UA server's certificate says against ``[opcua]`` (its URI, validity period and key)."""
    from inspector.plc.certificates import certificate_problems

    return certificate_problems(config.opcua)


def daemon_problems(config: InspectorConfig, opcua: bool) -> list[str]:
    """Every problem that stops a daemon with this config (security ones only once the rest is fine)."""
    problems = (
        parts_problems(config) + review_problems(config) + mqtt_problems(config) + gallery_problems(config)
    )
    if problems:
        return problems
    return security_problems(config) + (opcua_problems(config) if opcua else [])


def outputs_line(config: InspectorConfig) -> str:
    """Where the archive, the results endpoint, the live view and the MQTT broker will be, as ``check-config``
    prints it."""
    from inspector.outputs.assembly import archive_root

    root = archive_root(config.archive, os.environ)
    archive = (
        str(root)
        if root
        else "off"
        if not config.archive.enabled
        else "off (no directory, no $STATE_DIRECTORY)"
    )
    served = {
        name: f"http://{section.bind_address}:{section.port}/" if section.enabled else "off"
        for name, section in (("results", config.results), ("liveview", config.liveview))
    }
    mqtt = config.mqtt
    broker = (
        f"{'mqtts' if mqtt.tls else 'mqtt'}://{mqtt.host}:{mqtt.port}/{mqtt.topic_prefix}"
        if mqtt.enabled
        else "off"
    )
    return f"archive: {archive}  results: {served['results']}  liveview: {served['liveview']}  mqtt: {broker}"
