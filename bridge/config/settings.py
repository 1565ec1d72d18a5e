"""Settings: read once at start from ``BRIDGE_*`` variables and an optional TOML file, then frozen.

Nothing here is built at import time; :func:`load_settings` is called by the composition
root (``bridge.app.runtime``) or the CLI, and the resulting object is passed down explicitly.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from bridge.config.checks import valid_crontab
from bridge.config.deid_destinations import DeidDestination, check_destinations
from bridge.config.import_sources import ImportSource, check_unique_names

ENV_PREFIX = "BRIDGE_"
PROJECT_ROOT = Path(__file__).resolve().parents[2]


class ConfigError(Exception):
    """A setting is missing or wrong; the message names the ``BRIDGE_*`` key."""


class DicomPeer(BaseModel):
    """A DICOM application entity the bridge knows (allow-list entry)."""

    model_config = ConfigDict(frozen=True)

    ae_title: str = Field(min_length=1, max_length=16)
    host: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    #: Character set to assume for undeclared 8-bit text from this peer (e.g. ``windows-1251``).
    charset: str | None = None
    #: Names sent to this peer are transliterated to Latin (worklist responses).
    latin_only: bool = False
    #: What the peer does with the bridge: ``scu`` sends and queries (a modality), ``scp``
    #: receives (a C-MOVE destination, a forwarding target), ``both``.
    role: Literal["scu", "scp", "both"] = "both"
    #: Issuer of Patient ID for this peer's objects that carry none (0010,0021): the MIS
    #: assigning authority its PatientIDs come from, used to find the MIS patient.
    issuer_of_patient_id: str | None = Field(default=None, min_length=1, max_length=64)
    #: The common name (CN) of the client certificate this AE title must present over TLS
    #: (BRIDGE_DICOM_TLS with client certificates): an association calling with this AE
    #: title and another certificate, or none, is rejected.
    tls_subject: str | None = Field(default=None, min_length=1, max_length=256)


class ForwardRule(BaseModel):
    """Forward reconciled, stable studies to ``destination`` (a known peer with a port).
    ``modality`` and ``calling_ae`` narrow the rule; neither set means every study."""

    model_config = ConfigDict(frozen=True)

    destination: str = Field(min_length=1, max_length=16)
    modality: str | None = None
    calling_ae: str | None = None


class Settings(BaseSettings):
    """Every setting of the bridge. Documented one by one in README.md."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, frozen=True, extra="forbid", env_nested_delimiter="__"
    )

    data_dir: Path = Path("./var")
    database_url: str = ""
    bind: str = "127.0.0.1"
    mllp_port: int = Field(default=2575, ge=0, le=65535)
    dicom_port: int = Field(default=11112, ge=0, le=65535)
    http_port: int = Field(default=8080, ge=0, le=65535)
    ae_title: str = Field(default="BRIDGE", min_length=1, max_length=16)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    mappings_dir: Path = PROJECT_ROOT / "mappings"

    # HL7 v2 intake
    hl7_default_charset: str = "utf-8"
    hl7_sender_charsets: dict[str, str] = Field(default_factory=dict)
    hl7_max_message_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    #: An MLLP connection silent this long (idle, or stalled inside a message) is closed.
    mllp_idle_seconds: float = Field(default=600.0, gt=0, le=86400)
    #: MLLP connections open at once; more are closed on arrival.
    mllp_max_connections: int = Field(default=256, ge=1, le=10000)
    hl7_primary_authority: str = ""
    hl7_batch_max: int = Field(default=256, ge=1, le=10000)
    hl7_batch_linger_ms: float = Field(default=2.0, ge=0, le=100)
    accession_policy: Literal["generate", "reject"] = "generate"
    accession_prefix: str = "BR"
    study_uid_policy: Literal["generate", "leave_empty"] = "generate"
    uid_root: str = "1.2.826.0.1.3680043.10.1137"

    # TLS on the listeners (block owned by bridge.config.tls)
    #: The bridge's certificate (PEM, with its chain) and private key (PEM, unencrypted).
    tls_certificate: Path | None = None
    tls_private_key: Path | None = None
    #: Client certificates: ``none`` (not asked for), ``optional`` (checked when presented),
    #: ``required``; checked against the CAs in ``tls_client_ca``.
    tls_client_certificates: Literal["none", "optional", "required"] = "none"
    tls_client_ca: Path | None = None
    #: Which listeners speak TLS (each then speaks only TLS on its port).
    dicom_tls: bool = False
    mllp_tls: bool = False
    http_tls: bool = False
    #: Seconds a TLS client has to finish its handshake.
    tls_handshake_seconds: float = Field(default=10.0, gt=0, le=300)

    # DICOM
    dicom_peers: tuple[DicomPeer, ...] = ()
    dicom_strict_peers: bool = False
    mwl_character_set: str = "ISO_IR 192"
    mwl_translit_language: Literal["uk", "ru"] = "uk"
    dicom_max_associations: int = Field(default=16, ge=1, le=256)
    #: A DICOM peer silent this long (before its association request, or inside a PDU, or
    #: between messages) has its connection closed.
    dicom_network_timeout_seconds: float = Field(default=60.0, gt=0, le=3600)

    # Image intake, archive and reconciliation
    #: Where received files are kept (default: ``<data_dir>/archive``).
    archive_dir: Path | None = None
    store_duplicate_policy: Literal["ignore", "replace", "reject"] = "ignore"
    #: A study no order matches: kept in the reconciliation queue, or refused.
    reconcile_unmatched: Literal["queue", "reject"] = "queue"
    #: An object claiming another patient than the rest of its study: refused, or queued.
    reconcile_patient_conflict: Literal["reject", "queue"] = "reject"
    #: Days either side of the study date within which a PatientID+modality match counts.
    reconcile_date_window_days: int = Field(default=1, ge=0, le=30)
    #: A study of a known MIS patient with no order: ``link`` it to the patient, or
    #: ``queue`` it for review; unset, ``mappings/dicom/reconciliation.yaml`` decides.
    reconcile_unordered: Literal["link", "queue"] | None = None
    study_stable_seconds: float = Field(default=60.0, gt=0)
    #: How often the stability and job workers look for work.
    worker_poll_seconds: float = Field(default=1.0, gt=0, le=60)

    # Forwarding to other archives
    forward_rules: tuple[ForwardRule, ...] = ()
    forward_max_attempts: int = Field(default=10, ge=1, le=1000)
    forward_retry_base_seconds: float = Field(default=5.0, gt=0)
    forward_retry_max_seconds: float = Field(default=600.0, gt=0)

    # FHIR
    fhir_version: Literal["R4", "R5"] = "R4"
    #: The bridge's public HTTP base (for fullUrl, Endpoint.address); default from bind+port.
    public_base_url: str = ""
    #: Local time zone of the modalities' dates and times (ImagingStudy.started).
    local_timezone: str = "Europe/Kyiv"
    fhir_registry_url: str = ""
    fhir_registry_search: str = "status=active"
    fhir_registry_poll_seconds: float = Field(default=60.0, gt=0)
    #: How often the directory (Organizations, Practitioners) is pulled from the registry.
    fhir_registry_directory_seconds: float = Field(default=3600.0, gt=0)
    #: This facility's Organization identifier as ``system|value`` (registry searches).
    fhir_facility_identifier: str = ""
    fhir_target_url: str = ""
    #: After publishing, set the target's ServiceRequest to completed and link the study.
    fhir_target_complete_service_request: bool = True
    fhir_timeout_seconds: float = Field(default=10.0, gt=0)
    fhir_publish_max_attempts: int = Field(default=10, ge=1, le=1000)
    fhir_publish_retry_base_seconds: float = Field(default=2.0, gt=0)
    fhir_publish_retry_max_seconds: float = Field(default=300.0, gt=0)

    # Storage tiers: long-term copies, online cleanup, retention
    #: ``file:///path`` or ``s3://bucket/prefix``; empty means no long-term tier, no cleanup.
    longterm_url: str = ""
    #: S3-compatible endpoint (SeaweedFS, MinIO); boto3's own variables give the credentials.
    s3_endpoint_url: str = ""
    #: A stable study is copied to the long-term tier this long after it became stable.
    longterm_delay_seconds: float = Field(default=86400.0, ge=0)
    #: How often the migration job looks for studies due for their long-term copy.
    longterm_poll_seconds: float = Field(default=60.0, gt=0)
    #: Files copied (uploaded and read back) at once by the migration.
    longterm_workers: int = Field(default=8, ge=1, le=64)
    #: When online cleanup runs (crontab, five fields, in ``local_timezone``).
    cleanup_schedule: str = "0 3 * * *"
    #: Online copies go this many days after their long-term copy was verified (None: never).
    cleanup_after_days: float | None = Field(default=30.0, ge=0)
    #: Capacity of the online tier in bytes (0: the size of the file system holding it).
    online_quota_bytes: int = Field(default=0, ge=0)
    cleanup_high_water_percent: float = Field(default=90.0, gt=0, le=100)
    cleanup_low_water_percent: float = Field(default=80.0, ge=0, lt=100)
    #: What capacity cleanup removes first: every copied study, studies older than
    #: ``cleanup_older_than_days``, or the oldest studies until usage is below the low mark.
    cleanup_capacity_routine: Literal["copied", "older_than", "oldest_first"] = "oldest_first"
    cleanup_older_than_days: float = Field(default=90.0, ge=0)
    #: No study is deleted from every tier before it is this old (days).
    retention_days: int = Field(default=1095, ge=0)
    #: Retention per modality (e.g. ``{"MG": 3650}``), overriding ``retention_days``.
    retention_days_by_modality: dict[str, int] = Field(default_factory=dict)
    #: A study held only in long-term storage is copied back online when it is retrieved.
    recall_on_retrieve: bool = True
    #: How often usage per tier and modality is sampled for the history (seconds).
    storage_sample_seconds: float = Field(default=3600.0, ge=10)

    # Lossless compression (block owned by the compression module)
    #: Compress stored objects losslessly as the rules file says (False: never).
    compression_enabled: bool = True
    #: The rules (default: ``<mappings_dir>/storage/compression.yaml``).
    compression_rules: Path | None = None
    #: A compressed object's original file stays this long after the index points at the
    #: new one, so a retrieve that already looked up the old path still finds it.
    compression_keep_original_seconds: float = Field(default=3600.0, ge=0)
    #: Objects whose pixel data is larger are left as they are (memory: encoding holds the
    #: original, the compressed and the decoded pixels at once).
    compression_max_pixel_bytes: int = Field(default=512 * 1024 * 1024, ge=1024)

    # Legacy modality import (block owned by the import module)
    #: Folders legacy modalities export into (see ``bridge.config.import_sources.ImportSource``).
    import_sources: tuple[ImportSource, ...] = ()
    #: Transliteration system for sources with ``transliterate``: Ukrainian KMU 55 or
    #: Russian ICAO.
    import_translit_language: Literal["uk", "ru"] = "uk"
    #: Files handed to the archive at once by one import run (their commits are shared).
    import_workers: int = Field(default=4, ge=1, le=32)

    # Clinicians' logins and the audit trail (block owned by the auth and audit modules)
    #: How long a clinician's login (``brs_`` token) lasts.
    login_session_seconds: float = Field(default=8 * 3600.0, ge=60)
    #: Failed logins for one username within ``login_lockout_seconds`` that lock it (429).
    login_max_failures: int = Field(default=5, ge=1)
    login_lockout_seconds: float = Field(default=900.0, ge=1)
    #: OIDC bearer tokens from the hospital's identity provider: issuer, audience and the
    #: JWKS URL its signing keys are published at (all three, or none: OIDC off).
    oidc_issuer: str = ""
    oidc_audience: str = ""
    oidc_jwks_url: str = ""
    #: HMAC key for the audit chain (empty: plain SHA-256; set it so that somebody who can
    #: write to the database cannot rebuild a consistent chain after editing it).
    audit_hmac_key: SecretStr = SecretStr("")
    #: A stream of frame reads (rendered frames, thumbnails: a viewer scrolling) is one audit
    #: record per actor, address and study in this many seconds (0: a record per request).
    audit_coalesce_seconds: float = Field(default=300.0, ge=0, le=86400)
    #: An audit repository for IHE ATNA syslog (``udp://host:514``, ``tls://host:6514``;
    #: empty: none), the CA file that signs its TLS certificate, how often new records go.
    audit_syslog_url: str = ""
    audit_syslog_ca: Path | None = None
    audit_syslog_seconds: float = Field(default=5.0, ge=0.1)

    # De-identification for studies that leave the hospital (block owned by services/deid)
    #: The master key that wraps every export's key (32 bytes: raw, hex or base64 in a file
    #: only the bridge reads), or the key itself (hex/base64) in BRIDGE_DEID_MASTER_KEY.
    deid_master_key_file: Path | None = None
    deid_master_key: SecretStr = SecretStr("")
    deid_destinations: tuple[DeidDestination, ...] = ()
    #: A second AE title on the DICOM port: the grid gateway (de-identify and send to
    #: ``grid_destination`` on C-STORE; C-FIND from the key records; C-MOVE/C-GET fetch back).
    grid_ae_title: str = Field(default="", max_length=16)
    grid_destination: str = ""
    #: A folder watched for objects that come back from outside (restored into the archive).
    deid_incoming_dir: Path | None = None
    deid_max_attempts: int = Field(default=10, ge=1, le=1000)

    # The web console and the MIS's viewer links (block owned by the console and links)
    #: Signs viewer links and the console's CSRF tokens (hex or any text of 32+ characters).
    #: Empty: a random key kept in ``<data_dir>/console.key`` (several bridges behind one
    #: balancer must share it: set it then).
    console_secret: SecretStr = SecretStr("")
    #: How long a viewer link handed to the MIS opens its study.
    link_seconds: float = Field(default=900.0, ge=10, le=7 * 86400)
    #: Also put such a link (fresh on each read) in the ImagingStudy the FHIR API serves (a
    #: contained IHE IID Endpoint) and in the worklist API's orders that have a study. Not
    #: in ImagingStudies published to another server: a stored link would expire there.
    resource_viewer_links: bool = False

    @field_validator("deid_destinations")
    @classmethod
    def _deid_destinations(cls, value: tuple[DeidDestination, ...]
                           ) -> tuple[DeidDestination, ...]:
        return check_destinations(value)

    @field_validator("import_sources")
    @classmethod
    def _import_sources(cls, value: tuple[ImportSource, ...]) -> tuple[ImportSource, ...]:
        return check_unique_names(value)

    @field_validator("ae_title")
    @classmethod
    def _ae_title_ascii(cls, value: str) -> str:
        if not value.isascii() or "\\" in value or value.strip() != value:
            raise ValueError("must be ASCII without backslash or surrounding spaces")
        return value

    @field_validator("hl7_default_charset")
    @classmethod
    def _known_codec(cls, value: str) -> str:
        import codecs

        try:
            codecs.lookup(value)
        except LookupError as exc:
            raise ValueError(f"unknown charset {value!r}") from exc
        return value

    @field_validator("hl7_sender_charsets")
    @classmethod
    def _known_codecs(cls, value: dict[str, str]) -> dict[str, str]:
        import codecs

        for charset in value.values():
            try:
                codecs.lookup(charset)
            except LookupError as exc:
                raise ValueError(f"unknown charset {charset!r}") from exc
        return value

    @field_validator("local_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo

        try:
            ZoneInfo(value)
        except Exception as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("fhir_registry_url", "fhir_target_url", "public_base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("longterm_url")
    @classmethod
    def _longterm_url(cls, value: str) -> str:
        if value and not value.startswith(("file:///", "s3://")):
            raise ValueError("must be file:///path or s3://bucket/prefix")
        if value.startswith("s3://") and not value.removeprefix("s3://").strip("/"):
            raise ValueError("s3:// needs a bucket name")
        return value.rstrip("/")

    @field_validator("cleanup_schedule")
    @classmethod
    def _crontab(cls, value: str) -> str:
        return valid_crontab(value)

    @field_validator("uid_root")
    @classmethod
    def _uid_root(cls, value: str) -> str:
        parts = value.split(".")
        if len(value) > 40 or not all(p.isdigit() and (p == "0" or not p.startswith("0"))
                                      for p in parts):
            raise ValueError("must be a DICOM UID root of digits and dots, at most 40 characters")
        return value

    @model_validator(mode="after")
    def _secure_defaults(self) -> Settings:
        if not self.database_url:
            object.__setattr__(
                self, "database_url", f"sqlite:///{(self.data_dir / 'bridge.db').as_posix()}"
            )
        if self.archive_dir is None:
            object.__setattr__(self, "archive_dir", self.data_dir / "archive")
        if self.cleanup_low_water_percent >= self.cleanup_high_water_percent:
            raise ValueError(
                "cleanup_low_water_percent: must be below cleanup_high_water_percent")
        known = {p.ae_title for p in self.dicom_peers if p.port and p.role != "scu"}
        for rule in self.forward_rules:
            if rule.destination not in known:
                raise ValueError(
                    f"forward_rules: destination {rule.destination!r} is not a DICOM peer "
                    "with a host, a port and role scp or both"
                )
        self._check_deid()
        self._check_tls()
        if not _is_loopback(self.bind) and not self.dicom_peers:
            raise ValueError(
                "bind: listening on a non-loopback address needs a DICOM peer allow-list; "
                "set BRIDGE_DICOM_PEERS (and BRIDGE_DICOM_STRICT_PEERS=true)"
            )
        return self

    def _check_tls(self) -> None:
        if not (self.dicom_tls or self.mllp_tls or self.http_tls):
            return
        for name in ("tls_certificate", "tls_private_key"):
            path = getattr(self, name)
            if path is None or not Path(path).is_file():
                raise ValueError(f"{name}: a TLS listener (BRIDGE_DICOM_TLS, BRIDGE_MLLP_TLS, "
                                 "BRIDGE_HTTP_TLS) needs the bridge's PEM file here")
        if self.tls_client_certificates != "none" and (
                self.tls_client_ca is None or not Path(self.tls_client_ca).is_file()):
            raise ValueError("tls_client_ca: checking client certificates needs the CAs that "
                             "sign them (a PEM file)")

    def _check_deid(self) -> None:
        names = {d.name for d in self.deid_destinations}
        if self.grid_ae_title and self.grid_destination not in names:
            raise ValueError("grid_destination: name one of BRIDGE_DEID_DESTINATIONS for the "
                             "grid gateway (BRIDGE_GRID_AE_TITLE)")
        if self.grid_ae_title and self.grid_ae_title == self.ae_title:
            raise ValueError("grid_ae_title: must differ from BRIDGE_AE_TITLE")
        for destination in self.deid_destinations:
            peer = destination.peer_ae
            known = self.peer(peer) if peer is not None else None
            if peer is not None and (known is None or not known.port):
                raise ValueError(f"deid_destinations: {destination.name}: {peer} is not a "
                                 "DICOM peer with a host and a port (BRIDGE_DICOM_PEERS)")

    def deid_destination(self, name: str) -> DeidDestination | None:
        for destination in self.deid_destinations:
            if destination.name == name:
                return destination
        return None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if _toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=_toml_file))
        return tuple(sources)

    @property
    def base_url(self) -> str:
        """``public_base_url``, else what the bridge listens on."""
        return self.public_base_url or f"http://{self.bind}:{self.http_port}"

    @property
    def archive_root(self) -> Path:
        """``archive_dir``, always set after validation."""
        assert self.archive_dir is not None
        return self.archive_dir

    def peer(self, ae_title: str) -> DicomPeer | None:
        for peer in self.dicom_peers:
            if peer.ae_title == ae_title:
                return peer
        return None


_toml_file: Path | None = None


def _is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Read and validate the settings once. Raises :class:`ConfigError` naming the bad key."""
    global _toml_file
    if config_file is not None and not config_file.is_file():
        raise ConfigError(f"--config: no such file {config_file}")
    _toml_file = config_file
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None
    except ValueError as exc:  # TOML syntax errors surface as ValueError subclasses
        raise ConfigError(f"{config_file}: {exc}") from None
    finally:
        _toml_file = None


def describe_validation_error(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        key = ENV_PREFIX + (loc[0].upper() if loc else "SETTINGS")
        if not loc:  # model-level validator: the message starts with the field name
            field, _, rest = error["msg"].removeprefix("Value error, ").partition(":")
            key, msg = ENV_PREFIX + field.upper(), rest.strip()
        else:
            msg = error["msg"].removeprefix("Value error, ")
            if len(loc) > 1:
                key += " (" + ".".join(loc[1:]) + ")"
        lines.append(f"invalid setting {key}: {msg}")
    return "; ".join(lines)
