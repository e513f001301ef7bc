"""Render a notice: subject, plain text and HTML, in English or Simplified Chinese.

The templates live in ``regiongate/notify/templates/<language>/<template>.{subject,txt,html}.j2``
(jinja2; HTML templates are autoescaped, so an organisation called ``<b>Acme</b>`` is shown
as text). Everything a template states comes from the delivery's own evidence and its
campaign: territories, share, request counts, first and last seen, the enforcement date.
"""

from __future__ import annotations

import datetime as dt
import functools
import gettext
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import jinja2
import pycountry

from regiongate.notify.inputs import parse_time
from regiongate.notify.model import Campaign, Channel, Delivery

__all__ = ["Rendered", "format_share", "notice_context", "render", "territory_name"]

_MONTHS: Final = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip

# Subdivisions that notices name most often (the occupied regions of Ukraine): ISO 3166-2
# gives their names in Ukrainian transliteration only, which is not what readers expect.
_SUBDIVISIONS: Final[dict[str, dict[str, str]]] = {
    "UA-43": {"en": "Crimea", "zh-Hans": "克里米亚"},
    "UA-40": {"en": "Sevastopol", "zh-Hans": "塞瓦斯托波尔"},
    "UA-14": {"en": "Donetsk region", "zh-Hans": "顿涅茨克州"},
    "UA-09": {"en": "Luhansk region", "zh-Hans": "卢甘斯克州"},
    "UA-23": {"en": "Zaporizhzhia region", "zh-Hans": "扎波罗热州"},
    "UA-65": {"en": "Kherson region", "zh-Hans": "赫尔松州"},
}
# Countries whose ISO short name is not what a letter would say ("Russian Federation").
_COUNTRIES: Final[dict[str, dict[str, str]]] = {
    "RU": {"en": "Russia"},
    "XK": {"en": "Kosovo", "zh-Hans": "科索沃"},
    # What the impact report calls requests it could not locate.
    "unknown": {"en": "an unidentified location", "zh-Hans": "无法识别的地区"},
}
_GETTEXT_LANG: Final = {"en": "en", "zh-Hans": "zh_CN"}

# pycountry's Database.get is untyped (see regiongate.intel.regions).
_subdivision: Callable[..., Any] = pycountry.subdivisions.get
_country: Callable[..., Any] = pycountry.countries.get


@dataclass(frozen=True, slots=True)
class Rendered:
    subject: str
    text: str
    html: str


@functools.cache
def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("regiongate.notify", "templates"),
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("html.j2", "html"), default_for_string=False, default=False
        ),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


@functools.cache
def _translation(domain: str, language: str) -> gettext.NullTranslations:
    return gettext.translation(
        domain, pycountry.LOCALES_DIR, [_GETTEXT_LANG.get(language, "en")], fallback=True
    )


@functools.cache
def territory_name(code: str, language: str = "en") -> str:
    """A reader's name for a territory code (``CN`` → China / 中国), the code if unknown."""
    if code in _SUBDIVISIONS:
        return _SUBDIVISIONS[code].get(language, _SUBDIVISIONS[code]["en"])
    if "-" in code:
        sub = _subdivision(code=code)
        if sub is None:
            return code
        return _translation("iso3166-2", language).gettext(sub.name)
    override = _COUNTRIES.get(code, {})
    if language in override or code == "unknown":
        return override.get(language, override["en"])
    country = _country(alpha_2=code)
    if country is None:
        return code
    name = getattr(country, "common_name", None) or country.name
    return _translation("iso3166-1", language).gettext(name)


def _labelled(code: str, language: str) -> str:
    name = territory_name(code, language)
    if code == "unknown":
        return name
    if name == code:
        return code
    return f"{name}（{code}）" if language == "zh-Hans" else f"{name} ({code})"


def _join(items: Sequence[str], language: str) -> str:
    if language == "zh-Hans":
        return items[0] if len(items) == 1 else "、".join(items[:-1]) + "和" + items[-1]
    if len(items) <= 2:
        return " and ".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _short(items: Sequence[str], language: str) -> str:
    """At most two names, for a subject line."""
    if len(items) <= 2:
        return _join(items, language)
    if language == "zh-Hans":
        return f"{items[0]}、{items[1]}等 {len(items)} 个地区"
    more = len(items) - 2
    return f"{items[0]}, {items[1]} and {more} other location{'s' if more > 1 else ''}"


def format_share(share: float) -> str:
    """0.25 → ``25``; 0.1234 → ``12.3``; tiny but not zero → ``<0.1``."""
    pct = share * 100
    if 0 < pct < 0.1:
        return "<0.1"
    if 99.95 <= pct < 100:
        return "99.9"
    return f"{pct:.1f}".rstrip("0").rstrip(".")


def _date(when: dt.datetime, language: str) -> str:
    when = when.astimezone(dt.UTC)
    if language == "zh-Hans":
        return f"{when.year}年{when.month}月{when.day}日"
    return f"{when.day} {_MONTHS[when.month - 1]} {when.year}"


def _maybe_date(value: Any, language: str) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        return _date(parse_time(value), language)
    except ValueError:
        return None


def notice_context(campaign: Campaign, delivery: Delivery) -> dict[str, Any]:
    """What the templates may say, all of it formatted for the delivery's language."""
    lang = delivery.language
    ev = delivery.evidence
    params = campaign.params
    zh = lang == "zh-Hans"
    unsupported: dict[str, int] = dict(ev.get("unsupported_territories") or {})
    codes = sorted(unsupported, key=lambda c: (-unsupported[c], c))
    labels = [_labelled(c, lang) for c in codes] or ["—"]
    enforce = dt.datetime.fromtimestamp(campaign.enforce_from, dt.UTC)
    product = params.get("product") or None
    support = params.get("support") or None
    return {
        "org": delivery.org,
        "org_name": ev.get("org_name") or delivery.org,
        "channel": str(delivery.channel),
        "is_email": delivery.channel is Channel.EMAIL,
        "product": product or ("我们的 API" if zh else "our API"),
        "product_short": product or "API",
        "team": (f"{product} 团队" if zh else f"The {product} team")
        if product
        else ("API 团队" if zh else "The API team"),
        "support": support,
        "support_href": _href(support),
        "territories": [
            {
                "code": c,
                "name": territory_name(c, lang),
                "label": _labelled(c, lang),
                "requests": f"{unsupported[c]:,}",
            }
            for c in codes
        ],
        "several": len(codes) > 1,
        "territory_list": _join(labels, lang),
        "territory_short": _short(labels, lang),
        "share": format_share(float(ev.get("affected_share") or 0.0)),
        "requests": f"{int(ev.get('requests') or 0):,}",
        "affected": f"{int(ev.get('affected_requests') or 0):,}",
        "affected_one": int(ev.get("affected_requests") or 0) == 1,
        "first_seen": _maybe_date(ev.get("first_seen"), lang),
        "last_seen": _maybe_date(ev.get("last_seen"), lang),
        "enforce_date": _date(enforce, lang),
        "enforce_time": enforce.strftime("%H:%M") + " UTC",
        "block_code": params.get("block_code") or "unsupported_country_region_territory",
        "suspension": bool(params.get("suspension")),
        "policy": campaign.policy,
        "campaign": campaign.id,
        "reference": delivery.idempotency_key,
    }


def _href(support: str | None) -> str | None:
    if not support:
        return None
    if support.startswith(("https://", "http://")):
        return support
    if "@" in support and " " not in support:
        return f"mailto:{support}"
    return None


def render(campaign: Campaign, delivery: Delivery) -> Rendered:
    """The subject, text and HTML of ``delivery``'s notice."""
    env = _env()
    context = notice_context(campaign, delivery)
    base = f"{delivery.language}/{campaign.template}"
    subject = env.get_template(f"{base}.subject.j2").render(context)
    return Rendered(
        subject=" ".join(subject.split()),
        text=env.get_template(f"{base}.txt.j2").render(context),
        html=env.get_template(f"{base}.html.j2").render(context),
    )
