"""The rule for updating a stored patient's demographics, shared by the per-message and the
batch paths. Pure."""

from __future__ import annotations

from bridge.domain import PatientData


def demographic_changes(name: str, birth_date: str | None, sex: str | None,
                        data: PatientData) -> dict[str, str | None]:
    """What the sender said that differs from the stored name, birth date and sex.

    ``None`` in ``data`` means "not said" (keep); an empty string clears the value.
    """
    changes: dict[str, str | None] = {}
    if data.name is not None and data.name != name:
        changes["name"] = data.name
    if data.birth_date is not None and (data.birth_date or None) != birth_date:
        changes["birth_date"] = data.birth_date or None
    if data.sex is not None and (data.sex or None) != sex:
        changes["sex"] = data.sex or None
    return changes
