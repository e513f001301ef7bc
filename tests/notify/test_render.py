"""The notice templates: English and Simplified Chinese, text and HTML."""

from __future__ import annotations

import dataclasses
import time

import pytest

from regiongate.notify.model import Campaign, Channel, Delivery, Status
from regiongate.notify.render import format_share, render, territory_name

NAME = '<script>alert("x")</script> Acme & Co'


def notice(
    language: str, *, channel: Channel = Channel.EMAIL, **params: object
) -> tuple[Campaign, Delivery]:
    c = Campaign(
        id="api-2024@2024-07-09",
        policy="api-2024@2024-07-09",
        created=time.time(),
        enforce_from=1720483200.0,  # 2024-07-09T00:00:00Z
        params={"product": "Example API", "support": "support@provider.test", "suspension": True}
        | params,
    )
    d = Delivery(
        id=1,
        campaign=c.id,
        org="org-1",
        channel=channel,
        recipient="ops@acme.test",
        language=language,
        status=Status.PENDING,
        attempts=0,
        last_error=None,
        message_id="<notice.abc@provider.test>",
        evidence={
            "org": "org-1",
            "org_name": NAME,
            "requests": 1200,
            "affected_requests": 300,
            "affected_share": 0.25,
            "first_seen": "2024-05-01T00:00:03+00:00",
            "last_seen": "2024-06-01T12:00:00+00:00",
            "unsupported_territories": {"CN": 200, "RU": 100},
        },
        created=0.0,
        updated=0.0,
    )
    return c, d


def test_english_text_states_the_facts() -> None:
    r = render(*notice("en"))
    assert r.subject == (
        "Action required: Example API requests from China (CN) and Russia (RU) will be "
        "blocked from 9 July 2024"
    )
    text = " ".join(r.text.split())
    assert text.startswith(f"Hello {NAME},")  # text is not HTML: nothing escaped
    assert (
        "Between 1 May 2024 and 1 June 2024, 25% of your 1,200 requests (300 requests) came "
        "from China (CN) and Russia (RU)." in text
    )
    assert "Example API is not supported in these countries, regions or territories." in text
    assert "From 9 July 2024 (00:00 UTC), requests from these locations will be blocked" in text
    assert "unsupported_country_region_territory" in text
    assert "may have their access suspended" in text
    assert "Please contact support@provider.test" in text
    assert "Reference: notice.abc@provider.test" in text
    assert "China (CN) 200" in text and "Russia (RU) 100" in text


def test_english_html_is_escaped() -> None:
    r = render(*notice("en"))
    assert "<script>" not in r.html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; Acme &amp; Co" in r.html
    assert '<a href="mailto:support@provider.test">' in r.html
    assert "<strong>25%</strong>" in r.html and "<strong>9 July 2024</strong>" in r.html
    assert r.html.startswith("<!DOCTYPE html>") and '<html lang="en">' in r.html


def test_chinese_text_and_html() -> None:
    r = render(*notice("zh-Hans"))
    assert (
        r.subject
        == "重要通知：自2024年7月9日起，来自中国（CN）和俄罗斯（RU）的 Example API 请求将被拦截"
    )
    text = "".join(r.text.split())
    assert text.startswith(f"{NAME.replace(' ', '')}，您好")
    assert "2024年5月1日至2024年6月1日期间，贵组织共发出1,200次请求，其中25%（300次）" in text
    assert "来自中国（CN）和俄罗斯（RU）" in text
    assert "不支持在上述国家、地区或领土使用" in text
    assert "自2024年7月9日00:00UTC起" in text and "将被拦截" in text
    assert "support@provider.test" in text and "参考编号：notice.abc@provider.test" in text
    assert "<script>" not in r.html
    assert "&lt;script&gt;" in r.html and '<html lang="zh-Hans">' in r.html
    assert "<strong>2024年7月9日</strong>" in r.html


@pytest.mark.parametrize("language", ["en", "zh-Hans"])
def test_without_support_contact_or_suspension(language: str) -> None:
    email_text = render(*notice(language, support=None, suspension=False)).text
    hook_text = render(*notice(language, channel=Channel.WEBHOOK, support=None)).text
    if language == "en":
        assert "reply to this message" in email_text and "suspended" not in email_text
        assert "account representative" in hook_text
    else:
        assert "直接回复本邮件" in email_text and "暂停" not in email_text
        assert "客户经理" in hook_text


def test_single_territory_and_names() -> None:
    c, d = notice("en")
    one = dataclasses.replace(
        d, evidence={**d.evidence, "affected_requests": 1, "unsupported_territories": {"UA-43": 1}}
    )
    text = " ".join(render(c, one).text.split())
    assert "(1 request) came from Crimea (UA-43)." in text
    assert "not supported in this country, region or territory." in text
    assert "requests from this location will be blocked" in text
    zh = "".join(render(c, dataclasses.replace(one, language="zh-Hans")).text.split())
    assert "来自克里米亚（UA-43）" in zh and "该国家、地区或领土" in zh
    # Seen on one day only; never seen at all (no times in the report).
    day = {**one.evidence, "first_seen": "2024-06-01T01:00:00Z", "last_seen": "2024-06-01T02:00Z"}
    assert "On 1 June 2024, 25%" in " ".join(
        render(c, dataclasses.replace(one, evidence=day)).text.split()
    )
    zh_day = render(c, dataclasses.replace(one, evidence=day, language="zh-Hans"))
    assert "2024年6月1日当天" in zh_day.text and "<strong>2024年6月1日</strong>当天" in zh_day.html
    never = {**one.evidence, "first_seen": None, "last_seen": None}
    assert "Recently, 25%" in " ".join(
        render(c, dataclasses.replace(one, evidence=never)).text.split()
    )
    assert territory_name("UA-43") == "Crimea" and territory_name("UA-43", "zh-Hans") == "克里米亚"
    assert territory_name("IR") == "Iran" and territory_name("IR", "zh-Hans") == "伊朗"
    assert territory_name("XX") == "XX"
    assert [format_share(s) for s in (0.25, 0.1234, 0.0000001, 0.99999, 1.0, 0.0)] == [
        "25", "12.3", "<0.1", "99.9", "100", "0",
    ]  # fmt: skip
