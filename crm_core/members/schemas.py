"""Pydantic shapes for member input; validators delegate to crm_core.members.validation."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal, Self

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from crm_core.members import validation as v

ContactKind = Literal["mobile", "home", "work", "contact_person"]


def _blank_is_none(value: object) -> object:
    """Forms and spreadsheets send "" for an empty optional field."""
    return None if isinstance(value, str) and not value.strip() else value


Name = Annotated[str, AfterValidator(v.clean_name)]
Mobile = Annotated[str, AfterValidator(v.clean_mobile)]
Email = Annotated[str, AfterValidator(v.clean_email)]
OptionalMobile = Annotated[Mobile | None, BeforeValidator(_blank_is_none)]
OptionalEmail = Annotated[Email | None, BeforeValidator(_blank_is_none)]


class ContactIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    kind: ContactKind
    phone: str
    contact_name: str | None = Field(default=None, max_length=50)
    relation: str | None = Field(default=None, max_length=20)

    @field_validator("phone")
    @classmethod
    def _phone(cls, value: str) -> str:
        return v.clean_phone(value)

    @model_validator(mode="after")
    def _person_named(self) -> Self:
        if self.kind == "contact_person" and not self.contact_name:
            raise ValueError("a contact person needs a name")
        return self


class AddressIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    kind: Literal["home", "work", "delivery"] = "home"
    province: Annotated[str, Field(min_length=2, max_length=20)]
    city: Annotated[str, Field(min_length=2, max_length=20)]
    district: str | None = Field(default=None, max_length=20)
    detail: Annotated[str, Field(min_length=1, max_length=200)]
    postcode: str | None = None
    is_default: bool = False

    @field_validator("postcode")
    @classmethod
    def _postcode(cls, value: str | None) -> str | None:
        return None if value is None else v.clean_postcode(value)


class MemberIn(BaseModel):
    """A join application or a staff-entered member; missing key information is allowed here and
    reported by the join workflow (seed 004: 关键信息缺失审核), not rejected as malformed."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: Name
    customer_type: v.CustomerType = v.CustomerType.PERSONAL
    member_type: v.MemberType = v.MemberType.STANDARD
    mobile: OptionalMobile = None
    gender: Literal["male", "female"] | None = None
    birthday: dt.date | None = None
    id_type: v.IdType | None = None
    id_number: str | None = None
    email: OptionalEmail = None
    source: Literal["phone", "web", "store", "import", "other"] | None = None
    organisation_id: int | None = None
    remark: str | None = Field(default=None, max_length=v.REMARK_MAX)
    contacts: list[ContactIn] = Field(default_factory=list, max_length=20)
    addresses: list[AddressIn] = Field(default_factory=list, max_length=10)

    @model_validator(mode="after")
    def _identity(self) -> Self:
        if self.id_number and self.id_type is None:
            raise ValueError("id_type is required with id_number")
        if self.id_type is not None and self.id_number:
            self.id_number = v.clean_id_number(self.id_type, self.id_number)
            if self.id_type == v.IdType.RESIDENT_ID:
                encoded = v.resident_id_birthday(self.id_number)
                if self.birthday is None:
                    self.birthday = encoded
                elif self.birthday != encoded:
                    raise ValueError("birthday does not match the resident ID number")
        if self.birthday is not None and self.birthday > dt.date.today():
            raise ValueError("birthday is in the future")
        return self


class MemberUpdate(BaseModel):
    """Fields a person may change after joining; each one is checked against field permissions."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: Name | None = None
    gender: Literal["male", "female"] | None = None
    email: OptionalEmail = None
    mobile: OptionalMobile = None
    member_type: v.MemberType | None = None
    remark: str | None = Field(default=None, max_length=v.REMARK_MAX)
