"""Pydantic shapes for member input; validators delegate to crm_core.members.validation."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from crm_core.members import validation as v

ContactKind = Literal["mobile", "home", "work", "contact_person"]


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

    name: str
    customer_type: v.CustomerType = v.CustomerType.PERSONAL
    member_type: v.MemberType = v.MemberType.STANDARD
    mobile: str | None = None
    gender: Literal["male", "female"] | None = None
    birthday: dt.date | None = None
    id_type: v.IdType | None = None
    id_number: str | None = None
    email: str | None = None
    source: Literal["phone", "web", "store", "import", "other"] | None = None
    organisation_id: int | None = None
    remark: str | None = Field(default=None, max_length=v.REMARK_MAX)
    contacts: list[ContactIn] = Field(default_factory=list, max_length=20)
    addresses: list[AddressIn] = Field(default_factory=list, max_length=10)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return v.clean_name(value)

    @field_validator("mobile")
    @classmethod
    def _mobile(cls, value: str | None) -> str | None:
        return None if not value else v.clean_mobile(value)

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        return None if not value else v.clean_email(value)

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

    name: str | None = None
    gender: Literal["male", "female"] | None = None
    email: str | None = None
    mobile: str | None = None
    member_type: v.MemberType | None = None
    remark: str | None = Field(default=None, max_length=v.REMARK_MAX)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        return None if value is None else v.clean_name(value)

    @field_validator("mobile")
    @classmethod
    def _mobile(cls, value: str | None) -> str | None:
        return None if not value else v.clean_mobile(value)

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        return None if not value else v.clean_email(value)
