"""Reading POS export rows (CSV/XLSX) into checked transactions: pure functions, no I/O, run in a thread.

Columns are found by header text (English or the usual Chinese), case and spaces ignored:

* transaction id (单据号) — required; the key that makes the import idempotent;
* time (交易时间) — ``YYYY-MM-DD HH:MM[:SS]`` in Asia/Shanghai unless it carries an offset, or an Excel date;
* store / merchant (门店) — optional;
* member number (会员号), card number (卡号) or mobile (手机号) — at least one column; the first non-empty
  cell of a row, in that order, names the member;
* amount (金额) in yuan with at most 2 decimals → integer fen; a return may be written negative;
* lines — optional, ``category:amount;category:amount`` (the amounts must add up to the total); or a single
  category column (品类) for the whole receipt;
* type (类型) — optional: sale (销售, the default) or return (退货), with original transaction id (原单据号).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from crm_core import phones
from crm_core.importers.member_rows import RowError
from crm_core.importers.tabular import Row
from crm_core.loyalty.rules import SHANGHAI, PurchaseLine

FIELDS: dict[str, tuple[str, ...]] = {
    "transaction_id": (
        "transaction id",
        "transaction_id",
        "txn id",
        "receipt no",
        "单据号",
        "交易号",
        "流水号",
        "小票号",
    ),
    "time": ("time", "transaction time", "occurred at", "occurred_at", "date", "交易时间", "时间", "销售时间"),
    "store": ("store", "merchant", "shop", "门店", "商户", "商家", "店铺"),
    "member_no": ("member number", "member no", "member_no", "会员号", "会员编号"),
    "card_no": ("card number", "card no", "card_no", "卡号", "会员卡号"),
    "mobile": ("mobile", "phone", "手机", "手机号", "手机号码"),
    "amount": ("amount", "total", "金额", "消费金额", "实付金额"),
    "lines": ("lines", "items", "明细", "商品明细"),
    "category": ("category", "product category", "品类", "商品类别"),
    "type": ("type", "kind", "类型", "交易类型"),
    "original_id": ("original transaction id", "original id", "original_id", "原单据号", "原交易号"),
}
SALE_WORDS = {"", "sale", "销售", "消费"}
RETURN_WORDS = {"return", "refund", "退货", "退款"}
_MONEY = re.compile(r"^-?\d+(\.\d{1,2})?$")
_TIME_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y/%m/%d %H:%M:%S", "%Y/%m/%d %H:%M")


class HeaderProblem(ValueError):
    """The header lacks a required column: nothing can be imported."""


@dataclass(frozen=True, slots=True)
class Columns:
    index: dict[str, int]
    header_text: dict[str, str]


@dataclass(frozen=True, slots=True)
class PosRow:
    """A row that passed the file-level checks; the database checks (member, duplicates) come later."""

    row: int
    transaction_id: str
    kind: str  # sale | return
    occurred_at: dt.datetime
    store: str | None
    member_key: tuple[str, str]  # (member_no | card_no | mobile, value; mobile in E.164)
    amount_fen: int
    original_id: str | None
    lines: tuple[PurchaseLine, ...]
    content_hash: str
    member_given: str = ""  # the member cell as written, for the error report


def _norm(text: Any) -> str:
    return re.sub(r"[\s_]+", " ", str(text or "")).strip().lower()


def resolve_columns(header: Sequence[Any]) -> Columns:
    aliases = {_norm(alias): name for name, names in FIELDS.items() for alias in names}
    index: dict[str, int] = {}
    text: dict[str, str] = {}
    for position, cell in enumerate(header):
        name = aliases.get(_norm(cell))
        if name is not None and name not in index:
            index[name] = position
            text[name] = str(cell).strip()
    missing = [name for name in ("transaction_id", "time", "amount") if name not in index]
    if missing:
        raise HeaderProblem(f"missing column(s): {', '.join(missing)} (header: {list(header)})")
    if not {"member_no", "card_no", "mobile"} & index.keys():
        raise HeaderProblem("no member column: give member number, card number or mobile")
    for name in FIELDS:
        text.setdefault(name, name)
    return Columns(index, text)


def parse_fen(raw: Any) -> int:
    """Yuan with at most two decimals → fen, exactly; raises ValueError."""
    if isinstance(raw, bool) or raw is None:
        raise ValueError("empty amount")
    if isinstance(raw, int):
        return raw * 100
    text = (f"{raw:.10f}".rstrip("0").rstrip(".") if isinstance(raw, float) else str(raw)).strip()
    text = text.replace(",", "").removeprefix("¥").removeprefix("￥").strip()
    if not _MONEY.match(text):
        raise ValueError(f"not an amount in yuan with at most 2 decimals: {raw!r}")
    try:
        return int(Decimal(text) * 100)
    except InvalidOperation as exc:  # pragma: no cover - the pattern already excludes these
        raise ValueError(f"not an amount: {raw!r}") from exc


def parse_time(raw: Any) -> dt.datetime:
    """A POS time as an aware UTC datetime; naive times are Asia/Shanghai."""
    if isinstance(raw, dt.datetime):
        moment = raw
    elif isinstance(raw, str) and raw.strip():
        text = raw.strip()
        try:
            moment = dt.datetime.fromisoformat(text)
        except ValueError:
            for fmt in _TIME_FORMATS:
                try:
                    moment = dt.datetime.strptime(text, fmt)
                    break
                except ValueError:
                    continue
            else:
                raise ValueError(f"not a date and time: {raw!r}") from None
    else:
        raise ValueError(f"not a date and time: {raw!r}")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=SHANGHAI)
    return moment.astimezone(dt.UTC)


def parse_lines(raw: str, total_fen: int) -> tuple[PurchaseLine, ...]:
    lines = []
    for part in raw.replace("；", ";").split(";"):
        if not part.strip():
            continue
        category, sep, amount = part.replace("：", ":").rpartition(":")
        if not sep or not category.strip():
            raise ValueError(f"a line is category:amount, not {part.strip()!r}")
        lines.append(PurchaseLine(category.strip(), parse_fen(amount)))
    if sum(line.amount_fen for line in lines) != total_fen:
        raise ValueError("the lines do not add up to the amount")
    return tuple(lines)


def _cell(cells: Sequence[Any], columns: Columns, name: str) -> Any:
    position = columns.index.get(name)
    if position is None or position >= len(cells):
        return None
    value = cells[position]
    return value.strip() if isinstance(value, str) else value


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # Excel turns long numbers into floats
    return str(value).strip()


def content_hash(**parts: Any) -> str:
    """What makes two rows with one transaction id "the same": every field that changes the points."""
    joined = "|".join(f"{key}={parts[key]}" for key in sorted(parts))
    return hashlib.sha256(joined.encode()).hexdigest()


def parse_row(number: int, cells: Sequence[Any], columns: Columns) -> PosRow | RowError:
    """One file row → a PosRow, or the first problem found in it."""

    def error(name: str, value: Any, reason: str) -> RowError:
        return RowError(number, columns.header_text[name], _text(value), reason)

    transaction_id = _text(_cell(cells, columns, "transaction_id"))
    if not transaction_id:
        return error("transaction_id", "", "missing transaction id")
    if len(transaction_id) > 64:
        return error("transaction_id", transaction_id, "transaction id longer than 64 characters")
    kind_raw = _text(_cell(cells, columns, "type")).lower()
    if kind_raw in SALE_WORDS:
        kind = "sale"
    elif kind_raw in RETURN_WORDS:
        kind = "return"
    else:
        return error("type", kind_raw, "type must be sale/销售 or return/退货")
    time_raw = _cell(cells, columns, "time")
    try:
        occurred_at = parse_time(time_raw)
    except ValueError as exc:
        return error("time", time_raw, f"bad time: {exc}")
    amount_raw = _cell(cells, columns, "amount")
    try:
        amount_fen = parse_fen(amount_raw)
    except ValueError as exc:
        return error("amount", amount_raw, f"bad amount: {exc}")
    if kind == "return":
        amount_fen = abs(amount_fen)
    elif amount_fen < 0:
        return error("amount", amount_raw, "bad amount: a sale cannot be negative (mark returns as type return)")
    member_key: tuple[str, str] | None = None
    member_given = ""
    for name in ("member_no", "card_no", "mobile"):
        value = _text(_cell(cells, columns, name))
        if not value:
            continue
        member_given = value
        if name == "mobile":
            e164 = phones.normalise(value)
            if e164 is None:
                return error("mobile", value, "unknown member: not a valid mobile number")
            value = e164
        member_key = (name, value)
        break
    if member_key is None and kind == "sale":
        return error(next(n for n in ("member_no", "card_no", "mobile") if n in columns.index), "", "no member given")
    original_id = _text(_cell(cells, columns, "original_id")) or None
    if kind == "return" and not original_id:
        return error("original_id", "", "a return needs the original transaction id")
    lines_raw = _text(_cell(cells, columns, "lines"))
    category = _text(_cell(cells, columns, "category"))
    try:
        lines = parse_lines(lines_raw, amount_fen) if lines_raw else (PurchaseLine(category or "", amount_fen),)
    except ValueError as exc:
        return error("lines", lines_raw, f"bad lines: {exc}")
    store = _text(_cell(cells, columns, "store"))[:64] or None
    digest = content_hash(
        kind=kind,
        time=occurred_at.isoformat(),
        store=store,
        member="" if member_key is None else ":".join(member_key),
        amount=amount_fen,
        original=original_id,
        lines=";".join(f"{line.category}:{line.amount_fen}" for line in lines),
    )
    return PosRow(
        row=number,
        transaction_id=transaction_id,
        kind=kind,
        occurred_at=occurred_at,
        store=store,
        member_key=member_key or ("", ""),
        amount_fen=amount_fen,
        original_id=original_id,
        lines=lines,
        content_hash=digest,
        member_given=member_given,
    )


def parse_batch(rows: list[Row], columns: Columns) -> tuple[list[PosRow], list[RowError]]:
    good: list[PosRow] = []
    bad: list[RowError] = []
    for number, cells in rows:
        parsed = parse_row(number, cells, columns)
        (good if isinstance(parsed, PosRow) else bad).append(parsed)  # type: ignore[arg-type]
    return good, bad
