"""Realistic, deterministic Chinese demo data: members, contacts, cards, organisations, 交流记录, users.

Why it exists: demos, screen-pop rehearsals and benchmarks need data that looks like a Chinese
retail member base (names, carrier-valid mobiles, landlines with area codes, resident IDs with the
right check digit, shared family landlines, company switchboards) and that is the same every time,
so a benchmark on 1,000,000 members means the same thing on every machine.

Determinism
    The demo population of a seed is an endless, fixed sequence of members 0, 1, 2, ...
    Member *i* depends only on (seed, i, the anchor day): it is planned from a `random.Random`
    seeded with (seed, chunk of 1,000 members) and its mobile is a keyed permutation of *i*, so
    ``count=100`` gives exactly the first 100 members of ``count=1_000_000``. Timestamps
    (joining dates, birthdays, communication records over the last 90 days) are offsets from an
    anchor, by default today's 00:00 UTC; pass ``now=`` to pin it. Ids, member numbers and card
    numbers come from the database (sequences and `crm_core.members.numbers`), so they are
    identical on a fresh database and never collide with numbers issued later by the product.

Re-runs (idempotence)
    A member's identity is its own mobile, which is also the join workflow's duplicate key
    (seed 004: 重复入会申请). `generate_demo_members` *ensures* that the first ``count`` members
    of the seed exist: members whose mobile is already registered are skipped, and it returns
    how many it inserted. Running it twice inserts nothing the second time; running it with a
    larger count adds only the missing tail; an interrupted run (a batch's rows go in as one
    transaction) is completed by running it again, the completed members then getting the next
    free numbers. Two seeds in one database draw their mobiles from the same number space, so a
    few members of the second seed may be skipped.

Speed
    Calling Faker per row costs ~100 µs a field, i.e. hours for 1,000,000 members. Faker's zh_CN
    *lists* are used instead, drawn with a seeded `random.Random` (~45 µs a member, in a thread
    one batch ahead). On PostgreSQL each batch of 20,000 members first reserves its ids and
    numbers in a short transaction, in batch order, then goes in with asyncpg ``COPY``
    (`copy_records_to_table`) in its own transaction, two batches at a time: the server backend
    (index upkeep, foreign-key checks) is the bottleneck, and a second one uses the second core.
    1,000,000 members took 230 s on a shared 2-core machine. On SQLite each batch is one
    ``executemany`` transaction.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import logging
import os
import random
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from itertools import accumulate
from typing import Any

import phonenumbers
from faker.providers.company.zh_CN import Provider as _FakerCompany
from faker.providers.person.zh_CN import Provider as _FakerPerson
from faker.providers.ssn.zh_CN import Provider as _FakerSsn
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from sqlalchemy import ARRAY, String, Table, any_, bindparam, func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from crm_core.comms.models import CommunicationRecord
from crm_core.db import Base, make_engine, make_sessionmaker, transaction
from crm_core.members.models import Address, Card, Member, MemberContact, Organisation
from crm_core.members.numbers import allocate_serials, format_number
from crm_core.members.validation import resident_id_check_digit
from crm_core.phones import PhoneKind, parse_phone
from crm_core.security import service as security
from crm_core.security.models import OrgUnit, User
from crm_core.security.policy import DataScope, Role
from crm_core.settings import Settings

log = logging.getLogger(__name__)

CHUNK = 1_000  # members planned from one RNG stream; fixed forever, or every seed's data changes
ORG_BLOCK = 500  # one organisation (switchboard shared by 3–12 members) per this many members
PAIR_BLOCK = 100  # one couple sharing a home landline per this many members
BATCH_CHUNKS = 20  # 20,000 members per transaction / COPY round
MAX_MEMBERS = 10_000_000  # the mobile space holds 4× this many numbers (members + contact persons)
RECORD_WINDOW = dt.timedelta(days=90)
JOIN_WINDOW_DAYS = 5 * 365
DEMO_PASSWORD_ENV = "CTI_DEMO_PASSWORD"
DEFAULT_DEMO_PASSWORD = "cti-demo-only"  # demo only: set CTI_DEMO_PASSWORD for anything reachable by others


# ---------------------------------------------------------------- reference data


@dataclass(frozen=True, slots=True)
class City:
    """A city with what must agree with it: province, landline area code, postcode, districts."""

    province: str
    name: str
    area_code: str  # without the trunk prefix 0
    subscriber_digits: int
    postcode: str
    districts: tuple[str, ...]
    weight: float


# Area codes, subscriber lengths and districts are real; phonenumbers confirms every landline block
# below (see `_landline_first_digits`), so a mistake here drops a block instead of making bad data.
# fmt: off
CITIES: tuple[City, ...] = (
    City("北京市", "北京市", "10", 8, "100000", ("东城区", "西城区", "朝阳区", "海淀区", "丰台区", "昌平区"), 9),
    City("上海市", "上海市", "21", 8, "200000", ("黄浦区", "徐汇区", "静安区", "杨浦区", "浦东新区", "闵行区"), 9),
    City("天津市", "天津市", "22", 8, "300000", ("和平区", "河西区", "南开区", "河北区", "滨海新区"), 4),
    City("重庆市", "重庆市", "23", 8, "400000", ("渝中区", "江北区", "南岸区", "沙坪坝区", "九龙坡区", "渝北区"), 5),
    City("广东省", "广州市", "20", 8, "510000", ("越秀区", "天河区", "海珠区", "荔湾区", "白云区", "番禺区"), 7),
    City("广东省", "深圳市", "755", 8, "518000", ("福田区", "罗湖区", "南山区", "宝安区", "龙岗区", "龙华区"), 7),
    City("广东省", "东莞市", "769", 8, "523000", ("莞城街道", "南城街道", "东城街道", "虎门镇", "长安镇"), 3),
    City("江苏省", "南京市", "25", 8, "210000", ("玄武区", "秦淮区", "鼓楼区", "建邺区", "栖霞区", "江宁区"), 4),
    City("江苏省", "苏州市", "512", 8, "215000", ("姑苏区", "虎丘区", "吴中区", "相城区", "吴江区"), 4),
    City("浙江省", "杭州市", "571", 8, "310000", ("上城区", "拱墅区", "西湖区", "滨江区", "萧山区", "余杭区"), 5),
    City("浙江省", "宁波市", "574", 8, "315000", ("海曙区", "江北区", "鄞州区", "北仑区", "镇海区"), 3),
    City("四川省", "成都市", "28", 8, "610000", ("锦江区", "青羊区", "金牛区", "武侯区", "成华区", "双流区"), 6),
    City("湖北省", "武汉市", "27", 8, "430000", ("江岸区", "江汉区", "硚口区", "汉阳区", "武昌区", "洪山区"), 4),
    City("陕西省", "西安市", "29", 8, "710000", ("新城区", "碑林区", "莲湖区", "雁塔区", "未央区"), 4),
    City("辽宁省", "沈阳市", "24", 8, "110000", ("和平区", "沈河区", "大东区", "皇姑区", "铁西区"), 3),
    City("辽宁省", "大连市", "411", 8, "116000", ("中山区", "西岗区", "沙河口区", "甘井子区"), 2),
    City("山东省", "济南市", "531", 8, "250000", ("历下区", "市中区", "槐荫区", "天桥区", "历城区"), 3),
    City("山东省", "青岛市", "532", 8, "266000", ("市南区", "市北区", "黄岛区", "崂山区", "李沧区"), 3),
    City("河南省", "郑州市", "371", 8, "450000", ("中原区", "二七区", "金水区", "惠济区"), 4),
    City("湖南省", "长沙市", "731", 8, "410000", ("芙蓉区", "天心区", "岳麓区", "开福区", "雨花区"), 3),
    City("福建省", "福州市", "591", 8, "350000", ("鼓楼区", "台江区", "仓山区", "晋安区"), 2),
    City("福建省", "厦门市", "592", 7, "361000", ("思明区", "湖里区", "集美区", "海沧区"), 2),
    City("安徽省", "合肥市", "551", 8, "230000", ("瑶海区", "庐阳区", "蜀山区", "包河区"), 3),
    City("黑龙江省", "哈尔滨市", "451", 8, "150000", ("道里区", "南岗区", "道外区", "香坊区"), 3),
    City("云南省", "昆明市", "871", 8, "650000", ("五华区", "盘龙区", "官渡区", "西山区"), 2),
    City("吉林省", "长春市", "431", 8, "130000", ("南关区", "宽城区", "朝阳区", "二道区"), 2),
    City("河北省", "石家庄市", "311", 8, "050000", ("长安区", "桥西区", "新华区", "裕华区"), 3),
    City("江西省", "南昌市", "791", 8, "330000", ("东湖区", "西湖区", "青云谱区", "红谷滩区"), 2),
    City("广西壮族自治区", "南宁市", "771", 7, "530000", ("兴宁区", "青秀区", "江南区", "西乡塘区"), 2),
    City("山西省", "太原市", "351", 7, "030000", ("小店区", "迎泽区", "杏花岭区", "万柏林区"), 2),
)
# fmt: on
_CITY_CUM = list(accumulate(c.weight for c in CITIES))

# Stores own the members of their city (members.org_unit_id); everyone else belongs to 220 门店.
STORES: dict[str, tuple[str, str]] = {
    "北京市": ("220-BJ", "北京朝阳门店"),
    "上海市": ("220-SH", "上海徐汇门店"),
    "广州市": ("220-GZ", "广州天河门店"),
    "深圳市": ("220-SZ", "深圳南山门店"),
    "杭州市": ("220-HZ", "杭州西湖门店"),
    "成都市": ("220-CD", "成都锦江门店"),
}
# (code, name, parent code, kind): the seed 003 codes 000 全业务线, 220 门店, 300 电话中心 with teams.
DEMO_ORG_UNITS: tuple[tuple[str, str, str | None, str], ...] = (
    ("000", "全业务线", None, "company"),
    ("220", "门店", "000", "department"),
    *((code, name, "220", "department") for code, name in STORES.values()),
    ("300", "电话中心", "000", "department"),
    ("310", "一组", "300", "team"),
    ("320", "二组", "300", "team"),
    ("330", "回访组", "300", "team"),
)
# (username, display name, role, org unit, data scope override)
DEMO_USERS: tuple[tuple[str, str, Role, str, DataScope | None], ...] = (
    ("agent1", "坐席一号", Role.AGENT, "310", None),
    ("agent2", "坐席二号", Role.AGENT, "320", None),
    # A call-centre supervisor listens to calls from every store's members, so not only 300's own.
    ("supervisor1", "值班主管", Role.SUPERVISOR, "300", DataScope.ALL),
    ("staff1", "会员专员", Role.CRM_STAFF, "220", None),
    ("admin", "系统管理员", Role.ADMIN, "000", None),
)

_LAST_NAMES: tuple[str, ...] = tuple(_FakerPerson.last_names.keys())
_LAST_CUM: list[float] = list(accumulate(_FakerPerson.last_names.values()))
_MALE: tuple[str, ...] = tuple(_FakerPerson.first_names_male)
_FEMALE: tuple[str, ...] = tuple(_FakerPerson.first_names_female)
_MALE_SINGLE = tuple(n for n in _MALE if len(n) == 1)
_FEMALE_SINGLE = tuple(n for n in _FEMALE if len(n) == 1)
_ROMAN_FIRST: tuple[str, ...] = tuple(n.lower() for n in _FakerPerson.first_romanized_names)
_ROMAN_LAST: tuple[str, ...] = tuple(n.lower() for n in _FakerPerson.last_romanized_names)
_COMPANY_STEMS: tuple[str, ...] = tuple(
    dict.fromkeys(p for p in _FakerCompany.company_prefixes if not p.endswith("公司"))
)
_COMPANY_SUFFIXES: tuple[str, ...] = (*_FakerCompany.company_suffixes, "贸易有限公司", "实业有限公司", "电子有限公司")
_GOVERNMENT_UNITS = ("人民医院", "第一中学", "实验小学", "税务局", "图书馆", "疾病预防控制中心", "人力资源和社会保障局")
# GB/T 2260 province codes: resident IDs are drawn from Faker's county codes of mainland provinces.
_MAINLAND = frozenset(
    ("11", "12", "13", "14", "15", "21", "22", "23", "31", "32", "33", "34", "35", "36", "37", "41", "42", "43",
     "44", "45", "46", "50", "51", "52", "53", "54", "61", "62", "63", "64", "65")
)  # fmt: skip
_ID_AREAS: tuple[str, ...] = tuple(c for c in _FakerSsn.area_codes if c[:2] in _MAINLAND and not c.endswith("00"))
_PROVINCE_CODES = {
    "北京市": "11", "天津市": "12", "河北省": "13", "山西省": "14", "辽宁省": "21", "吉林省": "22",
    "黑龙江省": "23", "上海市": "31", "江苏省": "32", "浙江省": "33", "安徽省": "34", "福建省": "35",
    "江西省": "36", "山东省": "37", "河南省": "41", "湖北省": "42", "湖南省": "43", "广东省": "44",
    "广西壮族自治区": "45", "重庆市": "50", "四川省": "51", "云南省": "53", "陕西省": "61",
}  # fmt: skip
_ID_AREAS_BY_PROVINCE: dict[str, tuple[str, ...]] = {
    code: tuple(a for a in _ID_AREAS if a.startswith(code)) for code in set(_PROVINCE_CODES.values())
}
_STREET_STEMS = ("建设", "人民", "解放", "中山", "和平", "新华", "长江", "黄河", "文化", "朝阳")
_STREET_SUFFIXES = ("路", "街", "大道", "路", "街")
_ESTATE_STEMS = (
    "阳光",
    "金色",
    "翠苑",
    "锦绣",
    "华府",
    "景园",
    "名都",
    "万科",
    "碧水",
    "绿城",
    "世纪",
    "幸福",
    "和平",
    "东方",
)
_ESTATE_SUFFIXES = ("花园", "小区", "家园", "苑", "公寓", "新村")
_EMAIL_DOMAINS = ("qq.com", "163.com", "126.com", "sina.com", "foxmail.com", "139.com")
_RELATIONS = ("配偶", "父亲", "母亲", "儿子", "女儿", "朋友", "同事")
_REMARKS = (
    "偏好短信联系",
    "工作日白天不便接听",
    "老会员, 请优先处理",
    "仅接受微信通知",
    "需要发票",
    "家中有老人, 送货前电话确认",
)
_SUMMARIES: dict[str, tuple[str, ...]] = {
    "enquiry": (
        "咨询积分兑换规则, 已告知每年6月和12月可兑换。",
        "咨询会员卡升级条件, 已说明金卡门槛。",
        "查询最近一笔消费积分是否到账。",
        "咨询门店营业时间和停车优惠。",
        "询问生日优惠券的使用范围。",
    ),
    "complaint": (
        "投诉门店店员服务态度差, 已转门店经理跟进。",
        "投诉积分未按时到账, 已提交核查。",
        "投诉商品质量问题, 要求退换货。",
    ),
    "suggestion": ("建议增加线上兑换渠道。", "建议延长积分有效期。"),
    "return_visit": (
        "生日关怀回访, 会员表示满意。",
        "售后回访: 商品使用正常, 无其他需求。",
        "电话服务评价回访, 评分优秀。",
        "三天未回访客户跟进, 已确认近期到店意向。",
    ),
    "other": ("会员来电更新联系地址。", "来电核实短信活动真实性。"),
}
_STATUSES = ("active", "suspended", "closed", "applied", "reviewing", "rejected")
_STATUS_CUM = list(accumulate((0.90, 0.03, 0.03, 0.02, 0.01, 0.01)))  # mostly active, as in a live base
_CATEGORIES = ("enquiry", "return_visit", "complaint", "suggestion", "other")
_CATEGORY_CUM = list(accumulate((0.45, 0.35, 0.10, 0.05, 0.05)))
# Mobile prefixes weighted roughly by how common they are (China Mobile 13x/15x/18x dominate).
_MOBILE_PREFIXES: tuple[tuple[str, float], ...] = (
    *((p, 3.0) for p in ("134", "135", "136", "137", "138", "139")),
    *((p, 2.0) for p in ("130", "131", "132", "133")),
    *((p, 2.0) for p in ("150", "151", "152", "153", "155", "156", "157", "158", "159")),
    *((p, 2.0) for p in ("180", "181", "182", "183", "185", "186", "187", "188", "189")),
    *((p, 0.8) for p in ("173", "175", "176", "177", "178", "191", "193", "195", "198", "199", "166")),
    ("147", 0.3),
)
_MOBILE_BLOCKS = 6_500  # 7-digit blocks (carrier prefix + HLR code): 65,000,000 numbers
_FALLBACK_BLOCK_PREFIX = "138"


# ---------------------------------------------------------------- number spaces


def _mix32(value: int) -> int:
    """A 32-bit integer hash (the "lowbias32" finaliser): cheap, well mixed, the same on every run."""
    value &= 0xFFFFFFFF
    value = ((value >> 16) ^ value) * 0x45D9F3B & 0xFFFFFFFF
    value = ((value >> 16) ^ value) * 0x45D9F3B & 0xFFFFFFFF
    return (value >> 16) ^ value


class IndexPermutation:
    """A keyed bijection on range(size): 4-round Feistel network plus cycle walking.

    Mobiles are `blocks[p(i) // 10_000] + f"{p(i) % 10_000:04d}"`; a bijection means two demo
    members of one seed can never get the same number, with no set of used numbers to keep.
    """

    __slots__ = ("_half", "_keys", "_mask", "size")

    def __init__(self, size: int, key: int) -> None:
        bits = max(2, (size - 1).bit_length())
        bits += bits % 2
        self.size = size
        self._half = bits // 2
        self._mask = (1 << self._half) - 1
        self._keys = tuple(_mix32(key + 0x9E3779B9 * r) for r in range(4))

    def __call__(self, index: int) -> int:
        if not 0 <= index < self.size:
            raise ValueError(f"index {index} outside 0..{self.size - 1}")
        half, mask, value = self._half, self._mask, index
        while True:
            left, right = value >> half, value & mask
            for key in self._keys:
                left, right = right, left ^ (_mix32(right ^ key) & mask)
            value = (left << half) | right
            if value < self.size:  # cycle walking keeps the image inside range(size)
                return value


@cache
def mobile_blocks() -> tuple[str, ...]:
    """7-digit mobile blocks, each confirmed as a mobile range by phonenumbers.

    Positions never shift: a block phonenumbers rejects (after a metadata update) is replaced in
    place by an unused 138 block, so only that block's numbers change, not every seed's data set.
    """
    rng = random.Random("member-cti demo mobile blocks v1")
    prefixes = [p for p, _ in _MOBILE_PREFIXES]
    cum = list(accumulate(w for _, w in _MOBILE_PREFIXES))
    drawn: list[str] = []
    seen: set[str] = set()
    while len(drawn) < _MOBILE_BLOCKS:
        block = rng.choices(prefixes, cum_weights=cum)[0] + f"{rng.randrange(10_000):04d}"
        if block not in seen:
            seen.add(block)
            drawn.append(block)
    blocks = []
    for block in drawn:
        hlr = int(block[3:])
        while not (_is_mobile(block + "0000") and _is_mobile(block + "9999")):
            hlr = (hlr + 1) % 10_000
            candidate = f"{_FALLBACK_BLOCK_PREFIX}{hlr:04d}"
            if candidate not in seen:  # never two positions on one block: numbers must stay unique
                seen.add(candidate)
                block = candidate
        blocks.append(block)
    return tuple(blocks)


def _is_mobile(number: str) -> bool:
    try:
        return parse_phone(number).kind == PhoneKind.MOBILE
    except ValueError:
        return False


@cache
def _landline_first_digits(city: City) -> tuple[str, ...]:
    """First subscriber digits phonenumbers accepts as fixed lines in `city` (checked once per process)."""
    good = []
    for first in "2345678":
        samples = (first + "0" * (city.subscriber_digits - 1), first + "9" * (city.subscriber_digits - 1))
        if all(_is_landline(city.area_code, s) for s in samples):
            good.append(first)
    if not good:
        raise RuntimeError(f"no landline block valid for {city.name} (0{city.area_code}); fix CITIES")
    return tuple(good)


def _is_landline(area_code: str, subscriber: str) -> bool:
    number = phonenumbers.parse("+86" + area_code + subscriber)
    return bool(phonenumbers.is_valid_number(number)) and phonenumbers.number_type(number) in (
        phonenumbers.PhoneNumberType.FIXED_LINE,
        phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
    )


def _seed_key(seed: int, purpose: str) -> int:
    digest = hashlib.sha256(f"member-cti demo {purpose} {seed}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


class MobileSpace:
    """Members' own mobiles use the first half of the permuted space, contact persons the second."""

    def __init__(self, seed: int) -> None:
        self.blocks = mobile_blocks()
        size = len(self.blocks) * 10_000
        self.permutation = IndexPermutation(size, _seed_key(seed, "mobiles"))
        self.half = size // 2

    def _number(self, slot: int) -> str:
        value = self.permutation(slot)
        return f"+86{self.blocks[value // 10_000]}{value % 10_000:04d}"

    def member_mobile(self, index: int) -> str:
        return self._number(index)

    def contact_mobile(self, index: int, slot: int) -> str:
        """Up to two contact persons per member, disjoint from every member's own mobile of the seed."""
        return self._number(self.half + 2 * index + slot)


def credit_code(area: str, body: int, *, category: str = "91") -> str:
    """A 统一社会信用代码 (GB 32100-2015): category (91 enterprise, 12 public institution) + area +
    9-char body + check character, so imports that validate the check character accept it."""
    alphabet = "0123456789ABCDEFGHJKLMNPQRTUWXY"
    weights = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
    first17 = f"{category}{area}{body % 10**9:09d}"
    total = sum(alphabet.index(ch) * w for ch, w in zip(first17, weights, strict=True))
    return first17 + alphabet[(31 - total % 31) % 31]


# ---------------------------------------------------------------- the plan (pure, no I/O)


@dataclass(slots=True)
class DemoContact:
    kind: str  # mobile | home | work | contact_person
    phone_e164: str
    contact_name: str | None = None
    relation: str | None = None
    is_primary: bool = False


@dataclass(slots=True)
class DemoAddress:
    kind: str
    province: str
    city: str
    district: str
    detail: str
    postcode: str


@dataclass(slots=True)
class DemoRecord:
    direction: str
    category: str
    urgency: str
    status: str
    summary: str
    created_at: dt.datetime


@dataclass(slots=True)
class DemoCard:
    status: str  # active | cancelled | replaced
    issued_at: dt.datetime
    status_changed_at: dt.datetime


@dataclass(slots=True)
class DemoOrganisation:
    name: str
    org_type: str  # enterprise | government
    phone_e164: str
    credit_code: str
    created_at: dt.datetime


@dataclass(slots=True)
class DemoMember:
    """One planned member; everything but database ids and numbers."""

    index: int
    name: str
    gender: str
    birthday: dt.date
    id_type: str | None
    id_number: str | None
    mobile_e164: str
    email: str | None
    customer_type: str
    member_type: str
    status: str
    source: str
    remark: str | None
    created_at: dt.datetime
    store_code: str
    organisation: int | None = None  # index into the chunk's organisations
    contacts: list[DemoContact] = field(default_factory=list)
    address: DemoAddress | None = None
    cards: list[DemoCard] = field(default_factory=list)
    records: list[DemoRecord] = field(default_factory=list)


@dataclass(slots=True)
class DemoChunk:
    members: list[DemoMember]
    organisations: list[DemoOrganisation]


def anchor_for(now: dt.datetime | None) -> dt.datetime:
    """The instant all demo timestamps are offsets from: `now`, or today's 00:00 UTC."""
    if now is None:
        today = dt.datetime.now(dt.UTC)
        return today.replace(hour=0, minute=0, second=0, microsecond=0)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(dt.UTC)


class _Draw:
    """Fast draws from a seeded `random.Random`.

    `randrange`/`choice` cost ~1 µs each (rejection sampling in Python); `int(random() * n)`
    costs ~0.1 µs, with a bias below 2**-30 for the sizes used here. With ~40 draws a member
    this is most of the difference between 80 s and 20 s of planning for 1,000,000 members.
    """

    __slots__ = ("random", "rng")

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.random = rng.random

    def below(self, n: int) -> int:
        return int(self.random() * n)

    def between(self, low: int, high: int) -> int:
        return low + int(self.random() * (high - low + 1))

    def pick(self, items: Sequence[str]) -> str:
        return items[int(self.random() * len(items))]

    def weighted(self, cum_weights: Sequence[float]) -> int:
        """An index drawn with the weights whose running totals are `cum_weights`."""
        return min(bisect_right(cum_weights, self.random() * cum_weights[-1]), len(cum_weights) - 1)


class DemoPlanner:
    """Plans chunks of demo members; pure and deterministic for (seed, anchor, min_age)."""

    def __init__(self, seed: int, anchor: dt.datetime, *, min_age: int = 18) -> None:
        self.seed = seed
        self.anchor = anchor
        self.mobiles = MobileSpace(seed)
        today = anchor.date()
        try:
            self.latest_birthday = today.replace(year=today.year - min_age)
        except ValueError:  # 29 February → 28 February: still at least min_age years old
            self.latest_birthday = today.replace(year=today.year - min_age, day=28)
        self.record_start = anchor - RECORD_WINDOW
        self._org_key = _seed_key(seed, "organisations")

    def chunk(self, number: int) -> DemoChunk:
        """Members number*CHUNK .. number*CHUNK+CHUNK-1 and the organisations some of them work for."""
        draw = _Draw(random.Random(f"member-cti demo {self.seed} chunk {number}"))
        start = number * CHUNK
        members = [self._member(draw, start + offset) for offset in range(CHUNK)]
        organisations = self._organisations(draw, number, members)
        self._share_homes(draw, members)
        return DemoChunk(members, organisations)

    # -- people

    def _name(self, draw: _Draw, gender: str) -> str:
        last = _LAST_NAMES[draw.weighted(_LAST_CUM)]
        names, singles = (_MALE, _MALE_SINGLE) if gender == "male" else (_FEMALE, _FEMALE_SINGLE)
        if draw.random() < 0.45:  # most given names today have two characters
            return last + draw.pick(singles) + draw.pick(singles)
        return last + draw.pick(names)

    def _birthday(self, draw: _Draw) -> dt.date:
        # Adults only (seed 001: no under-18s); ages skew to 25–50 like a retail member base.
        years = draw.rng.triangular(0, 57, 14)
        return self.latest_birthday - dt.timedelta(days=int(years * 365.25) + draw.below(365))

    def _resident_id(self, draw: _Draw, birthday: dt.date, gender: str) -> str:
        sequence = draw.below(500) * 2 + (1 if gender == "male" else 0)  # odd = male (GB 11643)
        first17 = f"{draw.pick(_ID_AREAS)}{birthday:%Y%m%d}{sequence:03d}"
        return first17 + resident_id_check_digit(first17)

    def _email(self, draw: _Draw) -> str:
        domain = draw.pick(_EMAIL_DOMAINS)
        if domain in ("qq.com", "foxmail.com") and draw.random() < 0.7:
            return f"{draw.between(10_000, 3_999_999_999)}@{domain}"
        return f"{draw.pick(_ROMAN_FIRST)}.{draw.pick(_ROMAN_LAST)}{draw.below(100)}@{domain}"

    def _landline(self, draw: _Draw, city: City) -> str:
        first = draw.pick(_landline_first_digits(city))
        rest = draw.below(10 ** (city.subscriber_digits - 1))
        return f"+86{city.area_code}{first}{rest:0{city.subscriber_digits - 1}d}"

    def _address(self, draw: _Draw, city: City, kind: str = "home") -> DemoAddress:
        if draw.random() < 0.5:
            street = _LAST_NAMES[draw.weighted(_LAST_CUM)] + draw.pick(("路", "街"))
        else:
            street = draw.pick(_STREET_STEMS) + draw.pick(_STREET_SUFFIXES)
        estate = draw.pick(_ESTATE_STEMS) + draw.pick(_ESTATE_SUFFIXES)
        detail = (
            f"{street}{draw.between(1, 999)}号{estate}{draw.between(1, 30)}栋"
            f"{draw.between(1, 6)}单元{draw.between(1, 33)}{draw.between(1, 4):02d}室"
        )
        return DemoAddress(
            kind=kind,
            province=city.province,
            city=city.name,
            district=draw.pick(city.districts),
            detail=detail,
            postcode=city.postcode[:4] + f"{draw.below(100):02d}",
        )

    def _member(self, draw: _Draw, index: int) -> DemoMember:
        r = draw.random
        city = CITIES[draw.weighted(_CITY_CUM)]
        gender = "female" if r() < 0.54 else "male"  # retail member bases lean female
        birthday = self._birthday(draw)
        roll = r()
        id_type: str | None
        id_number: str | None
        if roll < 0.45:
            id_type, id_number = "resident_id", self._resident_id(draw, birthday, gender)
        elif roll < 0.46:
            id_type, id_number = "passport", f"E{draw.below(10**8):08d}"
        else:
            id_type = id_number = None
        roll = r()
        member_type = "standard" if roll < 0.78 else "gold" if roll < 0.95 else "diamond"
        status = _STATUSES[draw.weighted(_STATUS_CUM)]
        roll = r()
        source = "store" if roll < 0.5 else "web" if roll < 0.75 else "phone" if roll < 0.9 else "import"
        created_at = self.anchor - dt.timedelta(seconds=draw.below(JOIN_WINDOW_DAYS * 86_400))
        name = self._name(draw, gender)
        mobile = self.mobiles.member_mobile(index)
        member = DemoMember(
            index=index,
            name=name,
            gender=gender,
            birthday=birthday,
            id_type=id_type,
            id_number=id_number,
            mobile_e164=mobile,
            email=self._email(draw) if r() < 0.35 else None,
            customer_type="personal",
            member_type=member_type,
            status=status,
            source=source,
            remark=draw.pick(_REMARKS) if r() < 0.03 else None,
            created_at=created_at,
            store_code=STORES.get(city.name, ("220", ""))[0],
        )
        member.contacts.append(DemoContact("mobile", mobile, is_primary=True))
        if r() < 0.30:
            member.contacts.append(DemoContact("home", self._landline(draw, city)))
        elif r() < 0.05:
            member.contacts.append(DemoContact("work", self._landline(draw, city)))
        persons = 0 if r() < 0.72 else 1 if r() < 0.9 else 2
        for slot in range(min(persons, 3 - len(member.contacts))):
            other = "male" if r() < 0.5 else "female"
            member.contacts.append(
                DemoContact(
                    "contact_person",
                    self.mobiles.contact_mobile(index, slot),
                    self._name(draw, other),
                    draw.pick(_RELATIONS),
                )
            )
        member.address = self._address(draw, city)
        member.cards = self._cards(draw, status, created_at)
        if r() < 0.12 and status not in ("applied", "reviewing", "rejected"):
            member.records = self._records(draw, created_at)
        return member

    def _cards(self, draw: _Draw, status: str, created_at: dt.datetime) -> list[DemoCard]:
        """An active card per active or suspended member (a few after a 补卡), a cancelled one if closed."""
        if status not in ("active", "suspended", "closed"):
            return []
        issued = created_at + dt.timedelta(seconds=draw.between(60, 3 * 86_400))
        issued = min(issued, self.anchor)
        if status == "closed":
            closed_at = issued + (self.anchor - issued) * draw.random()
            return [DemoCard("cancelled", issued, closed_at)]
        if draw.random() < 0.015:
            replaced_at = issued + (self.anchor - issued) * draw.random()
            return [DemoCard("replaced", issued, replaced_at), DemoCard("active", replaced_at, replaced_at)]
        return [DemoCard("active", issued, issued)]

    def _records(self, draw: _Draw, member_created: dt.datetime) -> list[DemoRecord]:
        """交流记录 spread over the last 90 days (never before the member joined)."""
        start = max(self.record_start, member_created)
        span = (self.anchor - start).total_seconds()
        records = []
        for _ in range((1, 1, 1, 2, 2, 3)[draw.below(6)]):
            category = _CATEGORIES[draw.weighted(_CATEGORY_CUM)]
            direction = "out" if category == "return_visit" else ("in" if draw.random() < 0.9 else "out")
            urgency = "normal" if draw.random() < (0.6 if category == "complaint" else 0.88) else "important"
            if category == "complaint" and draw.random() < 0.15:
                urgency = "urgent"
            roll = draw.random()
            status = "done" if roll < 0.75 else "pending" if roll < 0.9 else "in_progress"
            created = start + dt.timedelta(seconds=draw.random() * span)
            records.append(DemoRecord(direction, category, urgency, status, draw.pick(_SUMMARIES[category]), created))
        records.sort(key=lambda rec: rec.created_at)
        return records

    # -- shared numbers

    def _organisations(self, draw: _Draw, chunk: int, members: list[DemoMember]) -> list[DemoOrganisation]:
        """One company (or public body) per 500 members whose switchboard reaches 3–12 of them.

        Staff are drawn inside their own 500-member block, so every prefix of the population of
        500 or more members holds a complete switchboard case for caller-ID ranking.
        """
        organisations = []
        for block, first in enumerate(range(0, len(members), ORG_BLOCK)):
            city = CITIES[draw.weighted(_CITY_CUM)]
            government = draw.random() < 0.2
            if government:
                name = city.name.removesuffix("市") + draw.pick(_GOVERNMENT_UNITS)
            else:
                name = city.name.removesuffix("市") + draw.pick(_COMPANY_STEMS) + draw.pick(_COMPANY_SUFFIXES)
            area = draw.pick(_ID_AREAS_BY_PROVINCE.get(_PROVINCE_CODES.get(city.province, ""), _ID_AREAS))
            serial = chunk * (CHUNK // ORG_BLOCK) + block  # unique per organisation of the seed
            organisations.append(
                DemoOrganisation(
                    name=name[:100],
                    org_type="government" if government else "enterprise",
                    phone_e164=self._landline(draw, city),
                    credit_code=credit_code(
                        area, (self._org_key + serial) % 10**9, category="12" if government else "91"
                    ),
                    created_at=self.anchor - dt.timedelta(seconds=draw.below(JOIN_WINDOW_DAYS * 86_400)),
                )
            )
            office = self._address(draw, city, kind="work")
            office.detail = office.detail.split("号")[0] + "号" + name[:20] + "大楼"
            block_size = min(ORG_BLOCK, len(members) - first)
            for position in draw.rng.sample(range(first, first + block_size), min(block_size, draw.between(3, 12))):
                member = members[position]
                member.customer_type = "government" if government else "enterprise"
                member.organisation = len(organisations) - 1
                member.address = dataclasses.replace(office)
                member.store_code = STORES.get(city.name, ("220", ""))[0]
        return organisations

    def _share_homes(self, draw: _Draw, members: list[DemoMember]) -> None:
        """One pair of members in every 100 (2%) is a couple sharing home landline and address.

        These make the caller-ID lookup return two OWN_LANDLINE candidates; the second names the
        first as contact person (配偶), so the first's mobile finds both members.
        """
        for start in range(0, len(members), PAIR_BLOCK):
            block = range(start, min(start + PAIR_BLOCK, len(members)))
            personal = [i for i in block if members[i].customer_type == "personal"]
            if len(personal) < 2:
                continue
            a, b = draw.rng.sample(personal, 2)
            first, second = members[a], members[b]
            home = next((c for c in first.contacts if c.kind == "home"), None)
            if home is None:
                city = next(c for c in CITIES if first.address is not None and c.name == first.address.city)
                home = DemoContact("home", self._landline(draw, city))
                first.contacts.insert(1, home)
                del first.contacts[3:]  # 1–3 contacts each
            spouse = DemoContact("contact_person", first.mobile_e164, first.name, "配偶")
            second.contacts = [second.contacts[0], DemoContact("home", home.phone_e164), spouse]
            second.address = dataclasses.replace(first.address) if first.address else None
            second.store_code = first.store_code


def plan_members(count: int, seed: int, *, now: dt.datetime | None = None, min_age: int = 18) -> Iterator[DemoMember]:
    """The first `count` demo members of `seed` without touching a database (tests, CSV exports)."""
    planner = DemoPlanner(seed, anchor_for(now), min_age=min_age)
    for number in range((count + CHUNK - 1) // CHUNK):
        yield from planner.chunk(number).members[: count - number * CHUNK]


# ---------------------------------------------------------------- writing


_MEMBER_COLUMNS = (
    "id", "member_no", "customer_type", "member_type", "status", "name", "gender", "birthday", "id_type",
    "id_number", "mobile_e164", "email", "source", "organisation_id", "owner_user_id", "org_unit_id", "remark",
    "created_at", "updated_at", "version",
)  # fmt: skip
_CONTACT_COLUMNS = ("id", "member_id", "kind", "phone_e164", "contact_name", "relation", "is_primary", "created_at")
_ADDRESS_COLUMNS = ("id", "member_id", "kind", "province", "city", "district", "detail", "postcode", "is_default")
_CARD_COLUMNS = ("id", "card_no", "member_id", "status", "issued_at", "status_changed_at", "replaces_card_id")
_RECORD_COLUMNS = (
    "id",
    "member_id", "direction", "category", "urgency", "status", "summary", "contact_name", "phone_e164",
    "call_id", "agent_user_id", "created_at", "updated_at",
)  # fmt: skip
_ORG_COLUMNS = ("id", "name", "org_type", "phone_e164", "credit_code", "created_at")


@dataclass(slots=True)
class _Rows:
    organisations: list[tuple[Any, ...]] = field(default_factory=list)
    members: list[tuple[Any, ...]] = field(default_factory=list)
    contacts: list[tuple[Any, ...]] = field(default_factory=list)
    addresses: list[tuple[Any, ...]] = field(default_factory=list)
    cards: list[tuple[Any, ...]] = field(default_factory=list)
    records: list[tuple[Any, ...]] = field(default_factory=list)


def _table(model: type[Base]) -> Table:
    return Base.metadata.tables[model.__tablename__]


class _Writer:
    """Engine-specific parts of a batch: per-transaction settings, existing keys, ids, bulk insert."""

    # Batches whose COPY may run at once, each in its own transaction on its own connection.
    concurrent_batches = 1

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def prepare(self) -> None:
        """Per-transaction settings, before the first statement."""

    async def existing(self, column: Any, values: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(values), 1_000):  # stay far below either engine's bind limit
            rows = await self.conn.execute(select(column).where(column.in_(values[start : start + 1_000])))
            found.update(row[0] for row in rows)
        return found

    async def reserve_ids(self, table: Table, count: int) -> list[int]:
        raise NotImplementedError

    async def insert(self, table: Table, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        raise NotImplementedError


class _PostgresWriter(_Writer):
    # Measured on 2 cores, 1,000,000 members: the server backend, not Python, is the bottleneck
    # (~85% of a core for index upkeep and foreign-key checks while Python used ~25% of the
    # other), 306 s with one writer. A second COPY transaction puts the idle core to work.
    concurrent_batches = 2

    async def prepare(self) -> None:
        # asyncpg prepares statements, and PostgreSQL switches a prepared statement to a generic plan
        # after 5 runs. Planned while the members table was still empty, that generic plan is a
        # sequential scan: the existence check below went from ~3 ms to ~40 ms per 1,000 mobiles as
        # the table grew (measured at 60k members). Custom plans see the table's current size.
        await self.conn.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
        # Demo data can be regenerated: no need to wait for the WAL flush at each batch commit.
        await self.conn.execute(text("SET LOCAL synchronous_commit = off"))

    async def existing(self, column: Any, values: Sequence[str]) -> set[str]:
        # One array parameter instead of 20 IN lists of 1,000 binds per batch.
        query = select(column).where(column == any_(bindparam("values", type_=ARRAY(String))))
        return {row[0] for row in await self.conn.execute(query, {"values": list(values)})}

    async def reserve_ids(self, table: Table, count: int) -> list[int]:
        if count == 0:
            return []
        # nextval on the table's own sequence: safe beside concurrent writers, and later ordinary
        # INSERTs continue after our ids without any setval.
        result = await self.conn.execute(
            text("SELECT nextval(pg_get_serial_sequence(:table, 'id')) FROM generate_series(1, :n)"),
            {"table": table.name, "n": count},
        )
        return [int(row[0]) for row in result]

    async def insert(self, table: Table, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        raw: Any = (await self.conn.get_raw_connection()).driver_connection
        # COPY must run inside the transaction SQLAlchemy opened on this connection (it was started
        # by the statements above); otherwise a failed batch would leave half its rows behind.
        if not raw.is_in_transaction():
            raise RuntimeError("COPY outside the batch transaction")
        await raw.copy_records_to_table(table.name, records=rows, columns=list(columns))


class _SqliteWriter(_Writer):
    async def reserve_ids(self, table: Table, count: int) -> list[int]:
        # Reserved and used in one transaction holding SQLite's write lock (BEGIN IMMEDIATE,
        # crm_core.db), so max(id) cannot move underneath us.
        top = (await self.conn.execute(select(func.coalesce(func.max(table.c.id), 0)))).scalar_one()
        return list(range(int(top) + 1, int(top) + 1 + count))

    async def insert(self, table: Table, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        if rows:
            # Through SQLAlchemy's insert so column types (UTC datetimes, dates) bind exactly as the ORM does.
            await self.conn.execute(table.insert(), [dict(zip(columns, row, strict=True)) for row in rows])


def _writer_for(conn: AsyncConnection) -> _Writer:
    return _PostgresWriter(conn) if conn.dialect.name == "postgresql" else _SqliteWriter(conn)


async def ensure_demo_org_units(session: AsyncSession) -> dict[str, int]:
    """The demo organisation tree (000 全业务线, 220 门店 with stores, 300 电话中心 with teams); code → id."""
    existing = {code: unit_id for code, unit_id in (await session.execute(select(OrgUnit.code, OrgUnit.id))).all()}
    for code, name, parent, kind in DEMO_ORG_UNITS:
        if code not in existing:
            existing[code] = (await security.add_org_unit(session, code, name, parent, kind)).id
    return existing


async def _reserve_batch(
    writer: _Writer, settings: Settings, chunks: list[DemoChunk], units: dict[str, int]
) -> tuple[_Rows, int]:
    """Skip members already present, reserve ids and numbers, and build the rows; returns (rows, skipped)."""
    conn = writer.conn
    rows = _Rows()
    planned = [m for chunk in chunks for m in chunk.members]
    taken = await writer.existing(Member.mobile_e164, [m.mobile_e164 for m in planned])
    members = [m for m in planned if m.mobile_e164 not in taken]
    if not members:
        return rows, len(planned)
    # Organisations are keyed by credit code: one left by an earlier run is reused, not duplicated,
    # and one whose staff all fall outside `count` (or were skipped) is not inserted.
    employer: dict[int, DemoOrganisation] = {
        m.index: chunk.organisations[m.organisation]
        for chunk in chunks
        for m in chunk.members
        if m.organisation is not None and m.mobile_e164 not in taken
    }
    needed = list({o.credit_code: o for o in employer.values()}.values())
    known: dict[str, int] = {}
    if needed:
        found = await conn.execute(
            select(Organisation.credit_code, Organisation.id).where(
                Organisation.credit_code.in_([o.credit_code for o in needed])
            )
        )
        known.update({str(code): int(org_id) for code, org_id in found})
    new_orgs = [o for o in needed if o.credit_code not in known]
    for org, org_id in zip(new_orgs, await writer.reserve_ids(_table(Organisation), len(new_orgs)), strict=True):
        known[org.credit_code] = org_id
        rows.organisations.append((org_id, org.name, org.org_type, org.phone_e164, org.credit_code, org.created_at))
    member_org = {index: known[org.credit_code] for index, org in employer.items()}

    card_count = sum(len(m.cards) for m in members)
    session = AsyncSession(bind=conn)  # joins the connection's transaction; closing it does not end that
    try:
        member_serials = await allocate_serials(session, f"no:{settings.member_no_prefix}", len(members))
        card_serials = (
            await allocate_serials(session, f"no:{settings.card_no_prefix}", card_count) if card_count else range(0)
        )
    finally:
        await session.close()
    # Every id is reserved here, batch after batch, so ids are the same on every run even when two
    # batches' COPYs run at once (column defaults would interleave their nextval calls).
    member_ids = await writer.reserve_ids(_table(Member), len(members))
    card_ids = iter(await writer.reserve_ids(_table(Card), card_count))
    contact_ids = iter(await writer.reserve_ids(_table(MemberContact), sum(len(m.contacts) for m in members)))
    address_ids = iter(await writer.reserve_ids(_table(Address), sum(m.address is not None for m in members)))
    record_ids = iter(await writer.reserve_ids(_table(CommunicationRecord), sum(len(m.records) for m in members)))
    card_numbers = iter(card_serials)

    for m, member_id, serial in zip(members, member_ids, member_serials, strict=True):
        rows.members.append(
            (
                member_id, format_number(settings.member_no_prefix, settings.member_no_digits, serial),
                m.customer_type, m.member_type, m.status, m.name, m.gender, m.birthday, m.id_type, m.id_number,
                m.mobile_e164, m.email, m.source, member_org.get(m.index), None, units[m.store_code], m.remark,
                m.created_at, m.created_at, 1,
            )
        )  # fmt: skip
        for c in m.contacts:
            rows.contacts.append(
                (
                    next(contact_ids),
                    member_id,
                    c.kind,
                    c.phone_e164,
                    c.contact_name,
                    c.relation,
                    c.is_primary,
                    m.created_at,
                )
            )
        if m.address is not None:
            a = m.address
            rows.addresses.append(
                (next(address_ids), member_id, a.kind, a.province, a.city, a.district, a.detail, a.postcode, True)
            )
        previous: int | None = None
        for card in m.cards:
            card_id = next(card_ids)
            card_no = format_number(settings.card_no_prefix, settings.card_no_digits, next(card_numbers))
            rows.cards.append(
                (card_id, card_no, member_id, card.status, card.issued_at, card.status_changed_at, previous)
            )
            previous = card_id
        for r in m.records:
            rows.records.append(
                (
                    next(record_ids), member_id, r.direction, r.category, r.urgency, r.status, r.summary,
                    m.name, m.mobile_e164, None, None, r.created_at, r.created_at,
                )
            )  # fmt: skip
    return rows, len(planned) - len(members)


async def _insert_rows(writer: _Writer, rows: _Rows) -> int:
    """Bulk-insert one batch in foreign-key order; returns the members inserted."""
    await writer.insert(_table(Organisation), _ORG_COLUMNS, rows.organisations)
    await writer.insert(_table(Member), _MEMBER_COLUMNS, rows.members)
    await writer.insert(_table(MemberContact), _CONTACT_COLUMNS, rows.contacts)
    await writer.insert(_table(Address), _ADDRESS_COLUMNS, rows.addresses)
    await writer.insert(_table(Card), _CARD_COLUMNS, rows.cards)
    await writer.insert(_table(CommunicationRecord), _RECORD_COLUMNS, rows.records)
    return len(rows.members)


async def _copy_batch(engine: AsyncEngine, rows: _Rows) -> int:
    async with engine.begin() as conn:
        writer = _writer_for(conn)
        await writer.prepare()
        return await _insert_rows(writer, rows)


def _progress_bar(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),  # stdout stays clean for scripts and JSON benchmarks
        disable=not enabled,
    )


async def generate_demo_members(
    settings: Settings,
    count: int,
    *,
    seed: int = 20261124,
    progress: bool = True,
    now: dt.datetime | None = None,
) -> int:
    """Make sure the first `count` demo members of `seed` exist; returns how many were inserted.

    Members whose mobile is already registered are skipped (see the module docstring), so this is
    safe to run again and completes an interrupted run. Needs a migrated database.
    """
    if not 0 <= count <= MAX_MEMBERS:
        raise ValueError(f"count must be between 0 and {MAX_MEMBERS:,}")
    planner = DemoPlanner(seed, anchor_for(now), min_age=settings.min_member_age)
    mobile_blocks()  # validate the number blocks before the progress bar starts
    engine = make_engine(settings.database_url)
    inserted = skipped = 0
    copies: set[asyncio.Task[int]] = set()
    pending: asyncio.Task[list[DemoChunk]] | None = None
    chunk_total = (count + CHUNK - 1) // CHUNK

    def plan(first: int) -> list[DemoChunk]:
        batch = []
        for number in range(first, min(first + BATCH_CHUNKS, chunk_total)):
            chunk = planner.chunk(number)
            del chunk.members[count - number * CHUNK :]
            batch.append(chunk)
        return batch

    try:
        async with transaction(make_sessionmaker(engine)) as session:
            units = await ensure_demo_org_units(session)
        with _progress_bar(progress) as bar:
            task = bar.add_task(f"demo members (seed {seed})", total=count)
            for first in range(0, chunk_total, BATCH_CHUNKS):
                chunks = await pending if pending is not None else plan(first)
                # Plan the next batch in a thread while this one is written (planning is most of
                # the Python work; the database works on the other core meanwhile).
                nxt = first + BATCH_CHUNKS
                pending = asyncio.create_task(asyncio.to_thread(plan, nxt)) if nxt < chunk_total else None
                async with engine.begin() as conn:
                    writer = _writer_for(conn)
                    await writer.prepare()
                    # Reserving runs batch by batch, in order, so ids and numbers are deterministic.
                    rows, passed = await _reserve_batch(writer, settings, chunks, units)
                    if writer.concurrent_batches == 1:
                        inserted += await _insert_rows(writer, rows)
                        bar.advance(task, len(rows.members))
                skipped += passed
                bar.advance(task, passed)
                if writer.concurrent_batches > 1 and rows.members:
                    # PostgreSQL: the reservation is committed; the COPY runs in its own transaction
                    # beside the previous batch's. A failed COPY leaves a gap in ids and numbers only.
                    copy = asyncio.create_task(_copy_batch(engine, rows))
                    copy.add_done_callback(
                        lambda done: bar.advance(task, 0 if done.cancelled() or done.exception() else done.result())
                    )
                    copies.add(copy)
                    if len(copies) >= writer.concurrent_batches:
                        finished, _ = await asyncio.wait(copies, return_when=asyncio.FIRST_COMPLETED)
                        for done in finished:
                            copies.discard(done)
                            inserted += done.result()
            for copy in list(copies):
                inserted += await copy
                copies.discard(copy)
    finally:
        # On failure: let the planning thread and the other COPY finish before the engine goes.
        await asyncio.gather(*copies, *([pending] if pending else []), return_exceptions=True)
        await engine.dispose()
    if skipped:
        log.info("demo data: %d of %d members already present (same mobile), skipped", skipped, count)
    return inserted


async def ensure_demo_users(settings: Settings) -> list[str]:
    """Demo org units and the users agent1, agent2, supervisor1, staff1, admin; returns those created.

    The password comes from CTI_DEMO_PASSWORD, default "cti-demo-only" — for demos only, never for
    a system reachable by others. Existing users are left as they are (their password is not reset).
    """
    password = os.environ.get(DEMO_PASSWORD_ENV) or DEFAULT_DEMO_PASSWORD
    if password == DEFAULT_DEMO_PASSWORD:
        log.warning("demo users get the default demo password; set %s for anything but a demo", DEMO_PASSWORD_ENV)
    engine = make_engine(settings.database_url)
    created: list[str] = []
    try:
        async with transaction(make_sessionmaker(engine)) as session:
            await ensure_demo_org_units(session)
            present = set((await session.execute(select(User.username))).scalars())
            for username, display, role, unit, scope in DEMO_USERS:
                if username in present:
                    continue
                await security.add_user(session, username, password, role, display, unit, scope)
                created.append(username)
    finally:
        await engine.dispose()
    return created
