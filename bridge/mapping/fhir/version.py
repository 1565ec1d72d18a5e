"""Which FHIR release the bridge speaks, and validation against it with fhir.resources.

``BRIDGE_FHIR_VERSION=R4`` (the default) uses the ``fhir.resources.R4B`` models: R4B is
wire-compatible with R4 for Patient, ServiceRequest, ImagingStudy, Endpoint and Bundle, and
the bridge announces ``fhirVersion`` 4.0.1 because that is what R4 servers and clients
expect. ``R5`` uses the package's default (5.0.0) models.

fhir.resources checks structure, cardinality and data types, not code values (a
ServiceRequest with ``status: "bogus"`` passes), so the mapping modules check the codes they
act on themselves, against the tables in ``mappings/fhir``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from functools import cache
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from bridge.errors import MappingFailed, Rejected

FhirVersion = Literal["R4", "R5"]
FHIR_VERSION_NUMBERS: dict[str, str] = {"R4": "4.0.1", "R5": "5.0.0"}
_PACKAGES = {"R4": "fhir.resources.R4B", "R5": "fhir.resources"}
#: At most this many validation problems are spelled out in one answer.
_MAX_LISTED = 5


def fhir_version_number(version: str) -> str:
    return FHIR_VERSION_NUMBERS[version]


@cache
def model_for(version: str, resource_type: str) -> type[BaseModel]:
    """The fhir.resources model class of ``resource_type`` in ``version``."""
    if version not in _PACKAGES:
        raise ValueError(f"unknown FHIR version {version!r}")
    if not resource_type.isalpha():
        raise Rejected(f"unknown resource type {resource_type!r}")
    try:
        module = importlib.import_module(f"{_PACKAGES[version]}.{resource_type.lower()}")
    except ImportError:
        raise Rejected(f"unknown resource type {resource_type!r}") from None
    model = getattr(module, resource_type, None)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise Rejected(f"unknown resource type {resource_type!r}")
    return model


def check_resource(version: str, data: Any, *, expected_type: str | None = None,
                   path: str = "") -> dict[str, Any]:
    """``data`` as a resource of ``version``; raises what the sender must be told.

    Not a JSON object, or another resource type than the endpoint takes: :class:`Rejected`
    (400). A resource fhir.resources refuses: :class:`MappingFailed` (422) whose location is
    the FHIRPath of the first problem, prefixed with ``path`` (``Bundle.entry[3].resource``).
    """
    if not isinstance(data, Mapping):
        raise Rejected("the body is not a JSON object", location=path or None)
    resource_type = data.get("resourceType")
    if not isinstance(resource_type, str) or not resource_type:
        raise Rejected("resourceType missing", location=_join(path, "resourceType"))
    if expected_type is not None and resource_type != expected_type:
        raise Rejected(f"expected a {expected_type}, not a {resource_type}",
                       location=_join(path, "resourceType"))
    model = model_for(version, resource_type)
    try:
        model.model_validate(data)
    except ValidationError as exc:
        raise invalid_resource(exc, resource_type, path) from None
    return dict(data)


def invalid_resource(exc: ValidationError, resource_type: str, path: str = "") -> MappingFailed:
    """A 422 naming each problem by FHIRPath. Input values are never echoed (PHI)."""
    errors = exc.errors(include_url=False, include_input=False)
    where = [fhir_path(path or resource_type, error["loc"]) for error in errors]
    problems = [f"{w}: {e['msg']}" for w, e in zip(where, errors, strict=True)]
    listed = "; ".join(problems[:_MAX_LISTED])
    if len(problems) > _MAX_LISTED:
        listed += f"; and {len(problems) - _MAX_LISTED} more"
    return MappingFailed(f"invalid {resource_type}: {listed}",
                         location=where[0] if where else path or resource_type)


def fhir_path(root: str, loc: tuple[int | str, ...]) -> str:
    """``("entry", 0, "resource", "foo")`` → ``root.entry[0].resource.foo``."""
    text = root
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part in ("resource_type", "__root__"):
            continue
        else:
            text += f".{part}"
    return text


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name
