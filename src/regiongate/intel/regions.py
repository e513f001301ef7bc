"""Map region names and GeoIP2 subdivision codes to ISO 3166-2 codes.

Geolocation sources name sub-national regions inconsistently ("Crimea", "Sebastopol City",
"Kharkivs’ka Oblast’", "St.-Petersburg"), and some of them file occupied Ukrainian territory
under RU. A subdivision rule that silently matches nothing is the worst failure regiongate can
have, so Ukraine and Russia use an explicit, hand-written table that covers every ``state1``
spelling seen in DB-IP, and every other country falls back to exact names from ``pycountry``.

These functions run once per distinct (country, region) pair while data is compiled, never
per request, so clarity wins over speed; the per-country indexes are still built lazily.
"""

from __future__ import annotations

import functools
import gettext
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pycountry

__all__ = [
    "OCCUPIED_UA",
    "is_valid_subdivision",
    "subdivision_code",
    "subdivision_country",
    "subdivision_from_iso",
]

# Ukrainian regions wholly or partly occupied by Russia. Sources disagree about the country
# for these (UA, RU, sometimes neither); regiongate always reports the ISO 3166-2 code that
# ISO assigns, which is Ukrainian, so that one territory rule catches every source.
OCCUPIED_UA: frozenset[str] = frozenset({"UA-43", "UA-40", "UA-14", "UA-09", "UA-23", "UA-65"})

# Region names longer than this are not names; refusing them early keeps garbage cheap.
_MAX_NAME = 200

# Apostrophe-like marks are dropped (so "Donets'ka", "Donets’ka" and "Donetska" agree), while
# dashes and punctuation become spaces (so "Ivano-Frankivsk" == "Ivano Frankivsk" and
# "St.-Petersburg" == "St Petersburg").
_APOSTROPHES = "'’‘ʼʻʹ`´′‛"
_SEPARATORS = '-‐‑‒–—―−﹘﹣－_.,;:()[]{}/\\"“”«»'
_TRANSLATE = {ord(c): None for c in _APOSTROPHES} | {ord(c): " " for c in _SEPARATORS}


# pycountry's Database.get is untyped; binding it once keeps mypy --strict quiet without an
# ignore comment that would become "unused" once pycountry adds annotations.
_lookup: Callable[..., Any] = pycountry.subdivisions.get


def _normalise(text: str) -> str:
    """Fold case, accents, apostrophes, dashes and whitespace for name matching."""
    folded = unicodedata.normalize("NFKC", text)
    # Strip accents after a compatibility decomposition: "Île-de-France" matches "Ile de France".
    folded = "".join(
        c for c in unicodedata.normalize("NFKD", folded) if not unicodedata.combining(c)
    )
    folded = folded.casefold().translate(_TRANSLATE)
    return " ".join(folded.split())


def _country(country: object) -> str | None:
    """Return an upper-case ISO 3166-1 alpha-2 code, or None if it cannot be one."""
    if not isinstance(country, str):
        return None
    cc = country.strip().upper()
    if len(cc) != 2 or not cc.isascii() or not cc.isalpha():
        return None
    return cc


# --- Ukraine and Russia: explicit table --------------------------------------------------------

# Type words that may follow (or, for "prefix" kinds, precede) a stem. They are written in
# every spelling the sources use; _normalise removes the apostrophes ("Oblast’").
_SUFFIXES: dict[str, tuple[str, ...]] = {
    "oblast": ("oblast", "oblast'", "region", "province"),
    "krai": ("krai", "kray", "territory", "region"),
    "republic": ("republic", "respublika"),
    "okrug": (
        "autonomous okrug",
        "autonomous district",
        "autonomous area",
        "avtonomnyy okrug",
        "okrug",
        "ao",
    ),
    "autonomous oblast": (
        "autonomous oblast",
        "autonomous region",
        "avtonomnaya oblast",
        "ao",
    ),
    "city": ("city", "federal city", "misto"),
}
_PREFIXES: dict[str, tuple[str, ...]] = {
    "republic": ("republic of", "respublika"),
    "city": ("city of", "misto"),
}


@dataclass(frozen=True)
class _Region:
    """One ISO 3166-2 subdivision and every name the sources use for it.

    ``stems`` match alone and combined with the type words of ``kind``; ``suffixed`` stems
    match only with a type word (used where the bare word means something else, e.g. bare
    "Moscow" is the city, not the oblast); ``exact`` names match only as written.
    """

    code: str
    kind: str
    stems: tuple[str, ...] = ()
    suffixed: tuple[str, ...] = ()
    exact: tuple[str, ...] = ()

    def names(self) -> Iterable[str]:
        """Yield every raw spelling this region answers to."""
        yield from self.stems
        yield from self.exact
        for stem in (*self.stems, *self.suffixed):
            for word in _SUFFIXES.get(self.kind, ()):
                yield f"{stem} {word}"
            for word in _PREFIXES.get(self.kind, ()):
                yield f"{word} {stem}"


# Ukraine. DB-IP uses English exonyms ("Odesa", "Odessa", "Kyiv City"), the Ukrainian
# adjectival form ("Kharkivs’ka Oblast’"), and Russian transliterations show up elsewhere,
# so all three are listed.
_UA_REGIONS: tuple[_Region, ...] = (
    _Region(
        "UA-05",
        "oblast",
        ("Vinnytsia", "Vinnytsya", "Vinnitsa", "Vinnytska", "Vinnitskaya", "Vinnytskaya"),
    ),
    _Region("UA-07", "oblast", ("Volyn", "Volhynia", "Volynska", "Volynskaya")),
    _Region(
        "UA-09",
        "oblast",
        ("Luhansk", "Lugansk", "Luhanska", "Luganskaya", "Luhanskaya"),
        # Russia's names for the territory it occupies; ISO code remains UA-09.
        exact=(
            "Luhansk People's Republic",
            "Lugansk People's Republic",
            "LPR",
            "LNR",
            "Luganskaya Narodnaya Respublika",
            "Luhansk Republic",
            "Lugansk Republic",
        ),
    ),
    _Region(
        "UA-12",
        "oblast",
        (
            "Dnipropetrovsk",
            "Dnepropetrovsk",
            "Dnipropetrovska",
            "Dnepropetrovskaya",
            "Dnipro",
            "Dnipropetrovskaya",
        ),
    ),
    _Region(
        "UA-14",
        "oblast",
        # Only the oblast: the Russian town of Donetsk is in Rostov oblast and sources give
        # it state1 "Rostov", so a *region* called Donetsk is always this one.
        ("Donetsk", "Donetska", "Donetskaya"),
        exact=(
            "Donetsk People's Republic",
            "DPR",
            "DNR",
            "Donetskaya Narodnaya Respublika",
            "Donetsk Republic",
        ),
    ),
    _Region("UA-18", "oblast", ("Zhytomyr", "Zhitomir", "Zhytomyrska", "Zhitomirskaya")),
    _Region(
        "UA-21",
        "oblast",
        (
            "Zakarpattia",
            "Zakarpattya",
            "Zakarpattia",
            "Zakarpatska",
            "Zakarpatskaya",
            "Transcarpathia",
            "Transcarpathian",
        ),
    ),
    _Region(
        "UA-23",
        "oblast",
        (
            "Zaporizhzhia",
            "Zaporizhzhya",
            "Zaporizhia",
            "Zaporizhzhe",
            "Zaporozhye",
            "Zaporozhe",
            "Zaporizhya",
            "Zaporizka",
            "Zaporizhska",
            "Zaporozhskaya",
        ),
    ),
    _Region(
        "UA-26",
        "oblast",
        ("Ivano-Frankivsk", "Ivano-Frankovsk", "Ivano-Frankivska", "Ivano-Frankovskaya"),
    ),
    # In DB-IP bare "Kyiv" is the oblast (its cities are Bila Tserkva, Boryspil, Brovary...)
    # and the capital is always "Kyiv City"; ISO names UA-30 just "Kyiv", but following the
    # data is what keeps 1,771 oblast networks out of the capital.
    _Region("UA-30", "city", suffixed=("Kyiv", "Kiev", "Kyyiv")),
    _Region("UA-32", "oblast", ("Kyiv", "Kiev", "Kyyiv", "Kyivska", "Kyyivska", "Kievskaya")),
    _Region(
        "UA-35",
        "oblast",
        ("Kirovohrad", "Kirovograd", "Kirovohradska", "Kirovogradskaya"),
        suffixed=("Kropyvnytskyi",),
    ),
    _Region("UA-40", "city", ("Sevastopol", "Sebastopol", "Sevastopol'")),
    _Region(
        "UA-43",
        "republic",
        ("Crimea", "Krym", "Krim", "Crimean"),
        exact=(
            "Autonomous Republic of Crimea",
            "Avtonomna Respublika Krym",
            "Crimea Autonomous Republic",
            "Krym Avtonomna Respublika",
        ),
    ),
    _Region("UA-46", "oblast", ("Lviv", "Lvov", "Lvivska", "Lvovskaya")),
    _Region(
        "UA-48",
        "oblast",
        (
            "Mykolaiv",
            "Mykolayiv",
            "Nikolaev",
            "Nikolayev",
            "Mykolaivska",
            "Nikolaevskaya",
            "Nikolayevskaya",
        ),
    ),
    _Region("UA-51", "oblast", ("Odesa", "Odessa", "Odeska", "Odesskaya")),
    _Region("UA-53", "oblast", ("Poltava", "Poltavska", "Poltavskaya")),
    _Region("UA-56", "oblast", ("Rivne", "Rovno", "Rivnenska", "Rovenskaya")),
    _Region("UA-59", "oblast", ("Sumy", "Sumska", "Sumskaya")),
    _Region("UA-61", "oblast", ("Ternopil", "Ternopol", "Ternopilska", "Ternopolskaya")),
    _Region("UA-63", "oblast", ("Kharkiv", "Kharkov", "Kharkivska", "Kharkovskaya")),
    _Region("UA-65", "oblast", ("Kherson", "Khersonska", "Khersonskaya")),
    _Region(
        "UA-68",
        "oblast",
        (
            "Khmelnytskyi",
            "Khmelnytskyy",
            "Khmelnytsky",
            "Khmelnytskiy",
            "Khmelnitsky",
            "Khmelnitskiy",
            "Khmelnytska",
            "Khmelnitskaya",
        ),
    ),
    _Region("UA-71", "oblast", ("Cherkasy", "Cherkassy", "Cherkaska", "Cherkasskaya")),
    _Region("UA-74", "oblast", ("Chernihiv", "Chernigov", "Chernihivska", "Chernigovskaya")),
    _Region("UA-77", "oblast", ("Chernivtsi", "Chernovtsy", "Chernivetska", "Chernovitskaya")),
)

# Russia: all 83 subjects ISO 3166-2 lists, with DB-IP's spellings ("Primorye", "Kuzbass",
# "Voronezj", "Khanty-Mansia") and the ISO/GOST transliterations pycountry uses.
_RU_REGIONS: tuple[_Region, ...] = (
    _Region("RU-AD", "republic", ("Adygea", "Adygeya", "Adygey", "Adyghe")),
    # DB-IP's bare "Altai" is the Republic (its networks are in Gorno-Altaysk); the krai is
    # always written with its type word ("Altay Kray"), so bare Altai/Altay go to RU-AL.
    _Region("RU-AL", "republic", ("Altai", "Altay", "Gorno-Altai")),
    _Region(
        "RU-ALT",
        "krai",
        ("Altayskiy", "Altaiskiy", "Altaysky", "Altaisky"),
        suffixed=("Altai", "Altay"),
    ),
    _Region("RU-AMU", "oblast", ("Amur", "Amurskaya")),
    _Region("RU-ARK", "oblast", ("Arkhangelsk", "Archangelsk", "Arkhangelskaya", "Archangel")),
    _Region("RU-AST", "oblast", ("Astrakhan", "Astrakhanskaya")),
    _Region("RU-BA", "republic", ("Bashkortostan", "Bashkiria", "Bashkiriya", "Bashkir")),
    _Region("RU-BEL", "oblast", ("Belgorod", "Belgorodskaya")),
    _Region("RU-BRY", "oblast", ("Bryansk", "Bryanskaya")),
    _Region("RU-BU", "republic", ("Buryatia", "Buryatiya", "Buryat")),
    _Region("RU-CE", "republic", ("Chechnya", "Chechnia", "Chechen", "Chechenskaya")),
    _Region("RU-CHE", "oblast", ("Chelyabinsk", "Chelyabinskaya")),
    _Region("RU-CHU", "okrug", ("Chukotka", "Chukot", "Chukotskiy", "Chukotsky")),
    _Region("RU-CU", "republic", ("Chuvashia", "Chuvashiya", "Chuvash", "Chuvashskaya")),
    _Region("RU-DA", "republic", ("Dagestan", "Daghestan")),
    _Region("RU-IN", "republic", ("Ingushetia", "Ingushetiya")),
    _Region(
        "RU-IRK",
        "oblast",
        ("Irkutsk", "Irkutskaya"),
        # Merged into Irkutsk oblast in 2008.
        exact=("Ust-Orda Buryat Okrug", "Ust-Orda Buryat Autonomous Okrug"),
    ),
    _Region("RU-IVA", "oblast", ("Ivanovo", "Ivanovskaya")),
    _Region(
        "RU-KAM",
        "krai",
        ("Kamchatka", "Kamchatskiy", "Kamchatsky"),
        # Kamchatka oblast and Koryakia merged into the krai in 2007.
        exact=("Kamchatka Oblast", "Koryakia", "Koryak Okrug", "Koryak Autonomous Okrug"),
    ),
    _Region(
        "RU-KB",
        "republic",
        ("Kabardino-Balkaria", "Kabardino-Balkariya", "Kabardino-Balkarskaya", "Kabardino-Balkar"),
    ),
    _Region(
        "RU-KC",
        "republic",
        (
            "Karachay-Cherkessia",
            "Karachayevo-Cherkesiya",
            "Karachaevo-Cherkesiya",
            "Karachay-Cherkess",
            "Karachayevo-Cherkesskaya",
            "Karachaevo-Cherkessia",
            "Karachayevo-Cherkessia",
        ),
    ),
    _Region("RU-KDA", "krai", ("Krasnodar", "Krasnodarskiy", "Krasnodarsky")),
    _Region(
        "RU-KEM",
        "oblast",
        ("Kemerovo", "Kemerovskaya", "Kuzbass", "Kuzbas"),
        # Official name since 2019.
        exact=("Kemerovo Oblast - Kuzbass", "Kemerovskaya oblast - Kuzbass"),
    ),
    _Region("RU-KGD", "oblast", ("Kaliningrad", "Kaliningradskaya")),
    _Region("RU-KGN", "oblast", ("Kurgan", "Kurganskaya")),
    _Region("RU-KHA", "krai", ("Khabarovsk", "Khabarovskiy", "Khabarovsky")),
    _Region(
        "RU-KHM",
        "okrug",
        (
            "Khanty-Mansia",
            "Khanty-Mansi",
            "Khanty-Mansiysk",
            "Khanty-Mansiyskiy",
            "Khanty-Mansiysky",
            "Yugra",
            "Ugra",
        ),
        exact=(
            "Khanty-Mansi Autonomous Okrug - Yugra",
            "Khanty-Mansiyskiy avtonomnyy okrug - Yugra",
        ),
    ),
    _Region("RU-KIR", "oblast", ("Kirov", "Kirovskaya")),
    _Region("RU-KK", "republic", ("Khakassia", "Khakasiya", "Khakasia")),
    _Region("RU-KL", "republic", ("Kalmykia", "Kalmykiya")),
    _Region("RU-KLU", "oblast", ("Kaluga", "Kaluzhskaya")),
    _Region("RU-KO", "republic", ("Komi",)),
    _Region("RU-KOS", "oblast", ("Kostroma", "Kostromskaya")),
    _Region("RU-KR", "republic", ("Karelia", "Kareliya")),
    _Region("RU-KRS", "oblast", ("Kursk", "Kurskaya")),
    _Region(
        "RU-KYA",
        "krai",
        ("Krasnoyarsk", "Krasnoyarskiy", "Krasnoyarsky"),
        # Taymyr and Evenkia merged into the krai in 2007.
        exact=("Taymyr", "Taimyr", "Evenkia", "Evenk Autonomous Okrug", "Taymyr Autonomous Okrug"),
    ),
    _Region("RU-LEN", "oblast", ("Leningrad", "Leningradskaya")),
    _Region("RU-LIP", "oblast", ("Lipetsk", "Lipetskaya")),
    _Region("RU-MAG", "oblast", ("Magadan", "Magadanskaya")),
    _Region("RU-ME", "republic", ("Mari El", "Mariy El", "Mari-El", "Mariy-El")),
    _Region("RU-MO", "republic", ("Mordovia", "Mordoviya")),
    # Bare "Moscow"/"Moskva" is the city (RU-MOW); the oblast needs its type word.
    _Region("RU-MOS", "oblast", ("Moskovskaya",), suffixed=("Moscow", "Moskva")),
    _Region("RU-MOW", "city", ("Moscow", "Moskva")),
    _Region("RU-MUR", "oblast", ("Murmansk", "Murmanskaya")),
    _Region("RU-NEN", "okrug", ("Nenets", "Nenetskiy", "Nenetsky", "Nenetsia")),
    _Region("RU-NGR", "oblast", ("Novgorod", "Novgorodskaya")),
    _Region(
        "RU-NIZ",
        "oblast",
        ("Nizhny Novgorod", "Nizhniy Novgorod", "Nizhni Novgorod", "Nizhegorodskaya", "Nizhegorod"),
    ),
    _Region("RU-NVS", "oblast", ("Novosibirsk", "Novosibirskaya")),
    _Region("RU-OMS", "oblast", ("Omsk", "Omskaya")),
    _Region("RU-ORE", "oblast", ("Orenburg", "Orenburgskaya")),
    _Region("RU-ORL", "oblast", ("Oryol", "Orel", "Oriol", "Orlovskaya")),
    _Region(
        "RU-PER",
        "krai",
        ("Perm", "Permskiy", "Permsky"),
        # Perm oblast and Komi-Permyak merged into the krai in 2005.
        exact=(
            "Perm Oblast",
            "Komi-Permyak",
            "Komi-Permyak Okrug",
            "Komi-Permyak Autonomous Okrug",
        ),
    ),
    _Region("RU-PNZ", "oblast", ("Penza", "Penzenskaya")),
    _Region(
        "RU-PRI",
        "krai",
        ("Primorye", "Primorie", "Primorsky", "Primorskiy", "Primorskii"),
        exact=("Primorskiy (Maritime) Kray", "Maritime Province", "Maritime Kray"),
    ),
    _Region("RU-PSK", "oblast", ("Pskov", "Pskovskaya")),
    _Region("RU-ROS", "oblast", ("Rostov", "Rostovskaya")),
    _Region("RU-RYA", "oblast", ("Ryazan", "Ryazanskaya")),
    _Region("RU-SA", "republic", ("Sakha", "Saha", "Yakutia", "Yakutiya", "Sakha (Yakutia)")),
    _Region("RU-SAK", "oblast", ("Sakhalin", "Sakhalinskaya")),
    _Region("RU-SAM", "oblast", ("Samara", "Samarskaya")),
    _Region("RU-SAR", "oblast", ("Saratov", "Saratovskaya")),
    _Region(
        "RU-SE",
        "republic",
        (
            "North Ossetia",
            "North Ossetia-Alania",
            "North Ossetiya",
            "North Osetia",
            "Severnaya Osetiya",
            "Severnaya Osetiya-Alaniya",
            "Alania",
        ),
    ),
    _Region("RU-SMO", "oblast", ("Smolensk", "Smolenskaya")),
    _Region(
        "RU-SPE",
        "city",
        (
            "Saint Petersburg",
            "St Petersburg",
            "St.-Petersburg",
            "Sankt-Peterburg",
            "Sankt Petersburg",
            "Petersburg",
            "St. Peterburg",
            "Saint Peterburg",
        ),
    ),
    _Region("RU-STA", "krai", ("Stavropol", "Stavropolskiy", "Stavropolsky")),
    _Region("RU-SVE", "oblast", ("Sverdlovsk", "Sverdlovskaya")),
    _Region("RU-TA", "republic", ("Tatarstan", "Tatariya", "Tataria")),
    _Region("RU-TAM", "oblast", ("Tambov", "Tambovskaya")),
    _Region("RU-TOM", "oblast", ("Tomsk", "Tomskaya")),
    _Region("RU-TUL", "oblast", ("Tula", "Tulskaya")),
    _Region("RU-TVE", "oblast", ("Tver", "Tverskaya")),
    _Region("RU-TY", "republic", ("Tyva", "Tuva")),
    _Region("RU-TYU", "oblast", ("Tyumen", "Tyumenskaya")),
    _Region("RU-UD", "republic", ("Udmurtia", "Udmurtiya", "Udmurt", "Udmurtskaya")),
    _Region("RU-ULY", "oblast", ("Ulyanovsk", "Ulyanovskaya")),
    _Region("RU-VGG", "oblast", ("Volgograd", "Volgogradskaya")),
    _Region("RU-VLA", "oblast", ("Vladimir", "Vladimirskaya")),
    _Region("RU-VLG", "oblast", ("Vologda", "Vologodskaya")),
    _Region("RU-VOR", "oblast", ("Voronezh", "Voronezj", "Voronezhskaya")),
    _Region(
        "RU-YAN",
        "okrug",
        ("Yamalo-Nenets", "Yamal-Nenets", "Yamalo-Nenetskiy", "Yamalo-Nenetsky", "Yamal"),
    ),
    _Region("RU-YAR", "oblast", ("Yaroslavl", "Jaroslavl", "Yaroslavskaya")),
    # Bare "Jewish" is not a region name, so only the type-worded forms count.
    _Region("RU-YEV", "autonomous oblast", ("Yevreyskaya", "Evreyskaya"), suffixed=("Jewish",)),
    _Region(
        "RU-ZAB",
        "krai",
        (
            "Zabaykalsky",
            "Zabaykalskiy",
            "Zabaikalsky",
            "Zabaikalskiy",
            "Transbaikal",
            "Transbaikalia",
        ),
        # Chita oblast and Agin-Buryatia merged into the krai in 2008.
        exact=(
            "Zabaykalskiy (Transbaikal) Kray",
            "Chita Oblast",
            "Agin-Buryat Okrug",
            "Agin-Buryat Autonomous Okrug",
        ),
    ),
)


def _index(regions: Iterable[_Region]) -> dict[str, str]:
    """Normalise every name; a name claimed by two codes is a table bug, so refuse it."""
    table: dict[str, str] = {}
    for region in regions:
        for raw in region.names():
            key = _normalise(raw)
            if table.setdefault(key, region.code) != region.code:
                msg = f"region name {raw!r} maps to {table[key]} and {region.code}"
                raise ValueError(msg)
    return table


_UA_TABLE: Mapping[str, str] = _index(_UA_REGIONS)
# Sources file occupied (and border-area) Ukrainian territory under RU, e.g. DB-IP has RU
# "Crimea", "Sebastopol City", "Luhansk" (Izvaryne) and "Kharkivs’ka Oblast’" (Hoptivka), so
# Russian lookups also see every Ukrainian name and answer with the Ukrainian code. No name
# is shared between the two tables (_index over both would raise if one were).
_RU_TABLE: Mapping[str, str] = _index((*_RU_REGIONS, *_UA_REGIONS))
_EXPLICIT: Mapping[str, Mapping[str, str]] = {"UA": _UA_TABLE, "RU": _RU_TABLE}


# --- Everywhere else: pycountry ----------------------------------------------------------------


@functools.cache
def _english() -> gettext.NullTranslations:
    """English names from iso-codes ("Bayern" -> "Bavaria"); a no-op if not shipped."""
    return gettext.translation("iso3166-2", pycountry.LOCALES_DIR, ["en"], fallback=True)


# Trailing type words that sources commonly drop ("Guangdong Sheng" -> "Guangdong").
_TYPE_WORDS: tuple[str, ...] = (
    "autonomous region",
    "autonomous province",
    "autonomous community",
    "capital district",
    "capital region",
    "capital city",
    "federal district",
    "special administrative region",
    "special municipality",
    "metropolitan city",
    "metropolitan region",
    "department",
    "departamento",
    "departement",
    "district",
    "division",
    "governorate",
    "municipality",
    "oblast",
    "oblysy",
    "okrug",
    "parish",
    "prefecture",
    "province",
    "provincia",
    "provinsi",
    "region",
    "republic",
    "shi",
    "sheng",
    "state",
    "territory",
    "voivodeship",
    "zizhiqu",
    "zhuangzu zizhiqu",
    "huizu zizhiqu",
    "uygur zizhiqu",
    "tebiexingzhengqu",
    "county",
    "city",
    "estado",
    "emirate",
    "canton",
    "kanton",
    "land",
    "ken",
    "to",
    "fu",
    "do",
)
_TYPE_KEYS: tuple[str, ...] = tuple(
    sorted({_normalise(w) for w in _TYPE_WORDS}, key=len, reverse=True)
)
# Words a *query* may lose. "city" is left out on purpose: "Mexico City" must not become
# "Mexico", which is a different state (MX-MEX) from the capital (MX-CMX).
_QUERY_TYPE_KEYS: tuple[str, ...] = tuple(k for k in _TYPE_KEYS if k != "city")
_QUERY_PREFIXES: tuple[str, ...] = (
    "state of ",
    "province of ",
    "region of ",
    "department of ",
    "county of ",
    "governorate of ",
)


def _without_type_word(key: str, words: tuple[str, ...] = _TYPE_KEYS) -> str | None:
    """Return ``key`` without one trailing type word, or None if it has none."""
    for word in words:
        if key.endswith(" " + word):
            stem = key[: -len(word) - 1].strip()
            if stem:
                return stem
    return None


def _name_forms(name: str) -> tuple[set[str], set[str]]:
    """Split a pycountry name into (full, short) normalised keys.

    pycountry writes alternates as "Lleida [Lérida]", inverts type words as
    "Murcia, Región de" and qualifies as "Sofia (stolitsa)"; each yields plain forms. Short
    forms are only used when no other subdivision claims them.
    """
    full: set[str] = set()
    short: set[str] = set()
    base, _, rest = name.partition("[")
    full.add(base)
    if rest:
        full.add(rest.split("]", 1)[0])
    for form in list(full):
        head, comma, tail = form.partition(",")
        if comma:
            full.add(f"{tail} {head}")
            short.add(head)
        if "(" in form:
            short.add(form.split("(", 1)[0])
        if "/" in form.strip("/"):
            short.update(form.split("/"))
    full_keys = {k for k in map(_normalise, full) if k}
    short_keys = {k for k in map(_normalise, short) if k}
    for key in list(full_keys):
        stem = _without_type_word(key)
        if stem is not None:
            short_keys.add(stem)
    return full_keys, short_keys - full_keys


@dataclass(frozen=True)
class _Candidate:
    """A subdivision a query stem may name."""

    code: str
    type: str  # pycountry's type, normalised ("province", "district municipality")
    top: bool  # no parent subdivision


@dataclass(frozen=True)
class _CountryIndex:
    """Name lookups for one country built from pycountry."""

    # Full names (and unambiguous short forms) of subdivisions of any level.
    names: Mapping[str, str]
    # Every subdivision whose full or short name is this stem, for queries that carry a type
    # word of their own ("Izmir Province", "Almaty Region").
    stems: Mapping[str, tuple[_Candidate, ...]]


# Countries whose ISO top level is a statistical or geographic grouping (development
# regions, island groups, "geographical units") while sources name the level below it, e.g.
# DB-IP's Dominican provinces and Indonesian provinces. Elsewhere a lower level is used only
# when it has the same type as top-level peers (Iraqi governorates under Kurdistan Region),
# because names like "Vilnius", "Zlin" or "Valencia" belong to a lower-level unit *smaller*
# than the region the source means (ES-V is one of the Valencian Community's provinces).
_GROUPING_TOP_LEVEL: frozenset[str] = frozenset({"CV", "DO", "GQ", "GW", "ID", "KN", "MH", "UG"})


@functools.lru_cache(maxsize=512)
def _pycountry_index(country: str) -> _CountryIndex:
    """Build ``country``'s name index from pycountry, dropping every ambiguous name.

    Precedence, first tier that has the name wins: top-level full names, top-level short
    forms, then lower-level full names and short forms. A name two subdivisions share
    within its tier is dropped, because guessing is worse than no answer.
    """
    subdivisions = list(_lookup(country_code=country) or [])
    english = _english()
    top_types = {str(sub.type) for sub in subdivisions if getattr(sub, "parent_code", None) is None}
    # Tiers: 0 top full, 1 top short, 2 lower full, 3 lower short.
    tiers: list[dict[str, set[str]]] = [{}, {}, {}, {}]
    info: dict[str, _Candidate] = {}
    for sub in subdivisions:
        code, kind = str(sub.code), str(sub.type)
        top = getattr(sub, "parent_code", None) is None
        if not (top or country in _GROUPING_TOP_LEVEL or kind in top_types):
            continue
        info[code] = _Candidate(code, _normalise(kind), top)
        base = 0 if top else 2
        for name in {str(sub.name), english.gettext(str(sub.name))}:
            full_keys, short_keys = _name_forms(name)
            for key in full_keys:
                tiers[base].setdefault(key, set()).add(code)
            for key in short_keys:
                tiers[base + 1].setdefault(key, set()).add(code)

    names: dict[str, str] = {}
    decided: set[str] = set()
    for tier in tiers:
        for key, codes in tier.items():
            if key in decided:
                continue
            decided.add(key)
            if len(codes) == 1:
                names[key] = next(iter(codes))

    stems: dict[str, set[str]] = {}
    for tier in tiers:
        for key, codes in tier.items():
            stems.setdefault(key, set()).update(codes)
    return _CountryIndex(
        names, {key: tuple(info[c] for c in sorted(codes)) for key, codes in stems.items()}
    )


def _by_stem(index: _CountryIndex, stem: str, word: str) -> str | None:
    """Resolve ``stem`` from a query that called it a ``word`` ("region", "province").

    The one candidate of that type wins ("Almaty Region" is Almaty oblysy, region, not
    Almaty city); failing that, the one top-level candidate ("Cluj County" is a Romanian
    "department" in ISO). Lower levels without a matching type are never guessed: "Liberec
    Region" is the Liberec kraj, not the Liberec district that shares its name.
    """
    candidates = index.stems.get(stem, ())
    typed = [c for c in candidates if word and word in c.type]
    if len(typed) == 1:
        return typed[0].code
    if typed:
        return None
    tops = [c for c in candidates if c.top]
    return tops[0].code if len(tops) == 1 else None


def _pycountry_match(country: str, key: str) -> str | None:
    """Look ``key`` up, then retry without a leading "State of" or trailing type word."""
    index = _pycountry_index(country)
    found = index.names.get(key)
    if found is not None:
        return found
    for prefix in _QUERY_PREFIXES:
        if key.startswith(prefix):
            return _by_stem(index, key[len(prefix) :], prefix.split()[0])
    stem = _without_type_word(key, _QUERY_TYPE_KEYS)
    if stem is None:
        return None
    return _by_stem(index, stem, key[len(stem) + 1 :])


# --- Public API ----------------------------------------------------------------------------------


def subdivision_code(country: str | None, region: str | None) -> str | None:
    """ISO 3166-2 code for a region *name* as a source gave it, or None if unknown.

    ``country`` is the alpha-2 code the source gave. Never raises; never guesses from city
    names (callers pass only region/state fields).
    """
    cc = _country(country)
    if cc is None or not isinstance(region, str) or len(region) > _MAX_NAME:
        return None
    key = _normalise(region)
    if not key:
        return None
    explicit = _EXPLICIT.get(cc)
    if explicit is not None:
        # Only the hand-written table: a pycountry fallback could not add anything it lacks
        # without also being able to contradict it.
        return explicit.get(key)
    return _pycountry_match(cc, key)


# GeoIP2-style databases have filed occupied Crimea and Sevastopol under RU with Russian
# "subject" codes that ISO 3166-2 does not contain (pycountry has no RU-CR / RU-SEV). The
# codes for the 2022 claims are not standard anywhere; they are accepted defensively in case
# a source invents them. None collides with a real RU code (a test checks this).
_RU_OCCUPIED_ISO: Mapping[str, str] = {
    "CR": "UA-43",
    "KRY": "UA-43",
    "SEV": "UA-40",
    "DPR": "UA-14",
    "DNR": "UA-14",
    "LPR": "UA-09",
    "LNR": "UA-09",
    "ZAP": "UA-23",
    "KHE": "UA-65",
}


def subdivision_from_iso(country: str | None, iso_code: str | None) -> str | None:
    """ISO 3166-2 code from a GeoIP2 subdivision code ("UA" + "43" or "UA-43"), else None."""
    if not isinstance(iso_code, str) or len(iso_code) > 12:
        return None
    sub = iso_code.strip().upper()
    if "-" in sub:
        prefix, _, sub = sub.partition("-")
        cc = _country(prefix)
    else:
        cc = _country(country)
    if cc is None or not sub.isascii() or not sub.isalnum():
        return None
    if cc == "RU" and sub in _RU_OCCUPIED_ISO:
        return _RU_OCCUPIED_ISO[sub]
    found = _lookup(code=f"{cc}-{sub}")
    return None if found is None else str(found.code)


def subdivision_country(code: str) -> str:
    """The ISO 3166-1 part of an ISO 3166-2 code: "UA-43" -> "UA"."""
    return code.partition("-")[0].strip().upper()


def is_valid_subdivision(code: str) -> bool:
    """True if ``code`` is an ISO 3166-2 code pycountry knows."""
    if not isinstance(code, str) or len(code) > 12 or "-" not in code:
        return False
    return _lookup(code=code.strip().upper()) is not None
