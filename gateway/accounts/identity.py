"""An identity as people type it (ID type, ID number, name, nationality), validated and looked up.

Names are NFC-normalised and compared exactly, whatever plane their characters are in (𠮷, 𪚥).
"""

from __future__ import annotations

import hmac
from typing import Literal

from pydantic import Field

from gateway import errors, rules
from gateway.accounts.records import AccountRecords, Identity
from gateway.directory.persons import Person
from gateway.inputs import StrictModel

IdTypeName = Literal["resident_id", "passport", "hk_macau_permit", "taiwan_permit", "foreign_permanent_resident"]


class IdentityFields(StrictModel):
    id_type: IdTypeName
    id_number: str = Field(min_length=1, max_length=32)
    name: str = Field(min_length=1, max_length=100)
    nationality: str | None = Field(default=None, min_length=3, max_length=3)


def identity_of(fields: IdentityFields) -> Identity:
    """Validate each part by its rule (each broken rule has its own code) and normalise it."""
    id_type = rules.IdType(fields.id_type)
    return Identity(
        id_type=id_type,
        id_number=rules.normalise_id_number(id_type, fields.id_number),
        name=rules.normalise_name(fields.name),
        nationality=rules.check_nationality(id_type, fields.nationality),
    )


def same_name(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


async def person_with(records: AccountRecords, identity: Identity) -> Person:
    """The registered person with exactly this ID and name, or 404 `identity_not_found`."""
    person = await records.person_by_identity(identity.id_type, identity.id_number)
    if person is None or not same_name(person.name, identity.name):
        raise errors.NotFound(
            "No account is registered with this ID type, ID number and name.", code="identity_not_found"
        )
    return person
