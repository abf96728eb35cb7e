"""The rules of the FHIR R4 vital-signs profiles that the FHIR export relies on, checked per Observation.

fhirclient and fhir.resources check resources against the base R4/R4B definitions only; profiles add
constraints they do not check. From http://hl7.org/fhir/R4/observation-vitalsigns.html (vitalsigns,
heartrate, resprate):

- category holds `vital-signs` (system observation-category); status and subject are present;
- effective[x] is present: a dateTime of at least day precision (vs-1) or a Period with a start;
- value[x], when present, is a Quantity with value, unit, system UCUM and code (the profile requires UCUM);
  without component or hasMember, a value or a dataAbsentReason is present (vs-2);
- each component has a code and a value or a dataAbsentReason (vs-3);
- heartrate: code has LOINC 8867-4, value (when present) in `/min`; resprate: LOINC 9279-1, `/min`;
- meta.profile names the profile the Observation conforms to.

An Observation not in category vital-signs must not name a vital-signs profile, and one that names a
vital-signs profile must be in that category.
"""

from __future__ import annotations

import re
from typing import Any

VITAL_SIGNS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
BASE = "http://hl7.org/fhir/StructureDefinition/"
PROFILE_CODES = {  # profile -> (required LOINC code, required UCUM code of valueQuantity)
    BASE + "heartrate": ("8867-4", "/min"),
    BASE + "resprate": ("9279-1", "/min"),
    BASE + "vitalsigns": (None, None),
}
DAY_PRECISION = re.compile(r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2}))?$")


def _codes(concept: dict[str, Any], system: str) -> set[str]:
    return {c.get("code") for c in concept.get("coding", []) if c.get("system") == system}


def _quantity_problems(quantity: dict[str, Any], where: str) -> list[str]:
    missing = [k for k in ("value", "unit", "system", "code") if k not in quantity]
    problems = [f"{where} lacks {', '.join(missing)}"] if missing else []
    if quantity.get("system") not in (None, UCUM):
        problems.append(f"{where} is not in UCUM")
    return problems


def observation_problems(obs: dict[str, Any]) -> list[str]:  # noqa: C901 - one flat check per profile rule
    """What breaks the vital-signs profile rules above (empty for a conforming Observation)."""
    profiles = set(obs.get("meta", {}).get("profile", []))
    vital = "vital-signs" in {
        code for category in obs.get("category", []) for code in _codes(category, VITAL_SIGNS_CATEGORY)
    }
    named = profiles & PROFILE_CODES.keys()
    if not vital:
        return ["names a vital-signs profile outside category vital-signs"] if named else []
    problems = []
    if not named:
        problems.append("meta.profile names no vital-signs profile")
    if not obs.get("status"):
        problems.append("no status")
    if not obs.get("subject", {}).get("reference"):
        problems.append("no subject")
    if "effectiveDateTime" in obs:
        if not DAY_PRECISION.match(obs["effectiveDateTime"]):
            problems.append("effectiveDateTime is not a dateTime of at least day precision (vs-1)")
    elif "effectivePeriod" in obs:
        if not obs["effectivePeriod"].get("start"):
            problems.append("effectivePeriod has no start")
    else:
        problems.append("no effective time (effectiveDateTime or effectivePeriod)")
    value = obs.get("valueQuantity")
    if value is not None:
        problems += _quantity_problems(value, "valueQuantity")
    elif not obs.get("component") and not obs.get("hasMember") and "dataAbsentReason" not in obs:
        problems.append("no value and no dataAbsentReason (vs-2)")
    elif any(key.startswith("value") for key in obs):
        problems.append("a vital sign's value must be a Quantity")
    for i, component in enumerate(obs.get("component", [])):
        if not component.get("code", {}).get("coding"):
            problems.append(f"component {i} has no code")
        if not any(k.startswith("value") for k in component) and "dataAbsentReason" not in component:
            problems.append(f"component {i} has no value and no dataAbsentReason (vs-3)")
        if "valueQuantity" in component:
            problems += _quantity_problems(component["valueQuantity"], f"component {i} valueQuantity")
    for profile in named:
        loinc, unit = PROFILE_CODES[profile]
        if loinc is not None and loinc not in _codes(obs.get("code", {}), LOINC):
            problems.append(f"{profile.rsplit('/', 1)[1]} needs code LOINC {loinc}")
        if unit is not None and value is not None and value.get("code") != unit:
            problems.append(f"{profile.rsplit('/', 1)[1]} needs valueQuantity in {unit}")
    return problems


def bundle_problems(bundle: dict[str, Any]) -> dict[str, list[str]]:
    """Problems per Observation (by its identifier), only for those that have any."""
    found = {}
    for entry in bundle.get("entry", []):
        resource = entry["resource"]
        if resource["resourceType"] == "Observation" and (problems := observation_problems(resource)):
            found[resource["identifier"][0]["value"]] = problems
    return found
