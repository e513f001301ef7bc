"""Cloud regions → the territory their data centres are in (ISO 3166-1 alpha-2 or ISO 3166-2).

The cloud range files (AWS ``ip-ranges.json``, GCP ``cloud.json``, Azure service tags) name
the region a range is announced from. A server in a region is *in* that region's territory:
a Hong Kong region (AWS ``ap-east-1``, GCP ``asia-east2``, Azure ``eastasia``) is in HK
whatever the registry says about the owner (US). The cloud sources answer with this
territory, so that under the ``any`` consensus a reseller's proxy in a Hong Kong region counts
as Hong Kong.

The tables hold the public regions of the three providers as they were documented at the
time of writing (2026), plus the US government and China partitions. Codes are ISO 3166-1
alpha-2 (a value with a ``-`` would be an ISO 3166-2 subdivision; none is needed today: no
region of these providers sits in a territory that only a subdivision rule describes).
A region missing from a table gives the range no territory (it keeps the region name and
the hosting flag); the reader lists such regions in the source's description.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

__all__ = ["CLOUD_REGIONS", "region_territory"]

# AWS: https://docs.aws.amazon.com/global-infrastructure/latest/regions/aws-regions.html
_AWS: Final[Mapping[str, str]] = {
    "us-east-1": "US",  # N. Virginia
    "us-east-2": "US",  # Ohio
    "us-west-1": "US",  # N. California
    "us-west-2": "US",  # Oregon
    "us-gov-east-1": "US",  # GovCloud (US-East)
    "us-gov-west-1": "US",  # GovCloud (US-West)
    "af-south-1": "ZA",  # Cape Town
    "ap-east-1": "HK",  # Hong Kong
    "ap-east-2": "TW",  # Taipei
    "ap-south-1": "IN",  # Mumbai
    "ap-south-2": "IN",  # Hyderabad
    "ap-southeast-1": "SG",  # Singapore
    "ap-southeast-2": "AU",  # Sydney
    "ap-southeast-3": "ID",  # Jakarta
    "ap-southeast-4": "AU",  # Melbourne
    "ap-southeast-5": "MY",  # Malaysia
    "ap-southeast-6": "NZ",  # New Zealand
    "ap-southeast-7": "TH",  # Thailand
    "ap-northeast-1": "JP",  # Tokyo
    "ap-northeast-2": "KR",  # Seoul
    "ap-northeast-3": "JP",  # Osaka
    "ca-central-1": "CA",  # Canada (Central), Montréal
    "ca-west-1": "CA",  # Calgary
    "cn-north-1": "CN",  # Beijing
    "cn-northwest-1": "CN",  # Ningxia
    "eu-central-1": "DE",  # Frankfurt
    "eu-central-2": "CH",  # Zurich
    "eu-west-1": "IE",  # Ireland
    "eu-west-2": "GB",  # London
    "eu-west-3": "FR",  # Paris
    "eu-south-1": "IT",  # Milan
    "eu-south-2": "ES",  # Spain (Aragón)
    "eu-north-1": "SE",  # Stockholm
    "eusc-de-east-1": "DE",  # European Sovereign Cloud (Brandenburg)
    "il-central-1": "IL",  # Tel Aviv
    "me-south-1": "BH",  # Bahrain
    "me-central-1": "AE",  # UAE
    "mx-central-1": "MX",  # Mexico (Central)
    "sa-east-1": "BR",  # São Paulo
}

# GCP: https://cloud.google.com/about/locations
_GCP: Final[Mapping[str, str]] = {
    "africa-south1": "ZA",  # Johannesburg
    "asia-east1": "TW",  # Changhua County
    "asia-east2": "HK",  # Hong Kong
    "asia-northeast1": "JP",  # Tokyo
    "asia-northeast2": "JP",  # Osaka
    "asia-northeast3": "KR",  # Seoul
    "asia-south1": "IN",  # Mumbai
    "asia-south2": "IN",  # Delhi
    "asia-southeast1": "SG",  # Jurong West
    "asia-southeast2": "ID",  # Jakarta
    "australia-southeast1": "AU",  # Sydney
    "australia-southeast2": "AU",  # Melbourne
    "europe-central2": "PL",  # Warsaw
    "europe-north1": "FI",  # Hamina
    "europe-north2": "SE",  # Stockholm
    "europe-southwest1": "ES",  # Madrid
    "europe-west1": "BE",  # St. Ghislain
    "europe-west2": "GB",  # London
    "europe-west3": "DE",  # Frankfurt
    "europe-west4": "NL",  # Eemshaven
    "europe-west6": "CH",  # Zurich
    "europe-west8": "IT",  # Milan
    "europe-west9": "FR",  # Paris
    "europe-west10": "DE",  # Berlin
    "europe-west12": "IT",  # Turin
    "me-central1": "QA",  # Doha
    "me-central2": "SA",  # Dammam
    "me-west1": "IL",  # Tel Aviv
    "northamerica-northeast1": "CA",  # Montréal
    "northamerica-northeast2": "CA",  # Toronto
    "northamerica-south1": "MX",  # Querétaro
    "southamerica-east1": "BR",  # São Paulo
    "southamerica-west1": "CL",  # Santiago
    "us-central1": "US",  # Council Bluffs, Iowa
    "us-east1": "US",  # Moncks Corner, South Carolina
    "us-east4": "US",  # Ashburn, Virginia
    "us-east5": "US",  # Columbus, Ohio
    "us-south1": "US",  # Dallas, Texas
    "us-west1": "US",  # The Dalles, Oregon
    "us-west2": "US",  # Los Angeles
    "us-west3": "US",  # Salt Lake City
    "us-west4": "US",  # Las Vegas
}

# Azure: the ``region`` of service tags (https://learn.microsoft.com/azure/reliability/regions-list).
_AZURE: Final[Mapping[str, str]] = {
    "eastasia": "HK",  # East Asia, Hong Kong
    "southeastasia": "SG",  # Southeast Asia, Singapore
    "australiaeast": "AU",  # New South Wales
    "australiasoutheast": "AU",  # Victoria
    "australiacentral": "AU",  # Canberra
    "australiacentral2": "AU",  # Canberra
    "austriaeast": "AT",  # Vienna
    "brazilsouth": "BR",  # São Paulo State
    "brazilsoutheast": "BR",  # Rio de Janeiro
    "canadacentral": "CA",  # Toronto
    "canadaeast": "CA",  # Quebec City
    "centralindia": "IN",  # Pune
    "southindia": "IN",  # Chennai
    "westindia": "IN",  # Mumbai
    "jioindiacentral": "IN",  # Nagpur
    "jioindiawest": "IN",  # Jamnagar
    "chilecentral": "CL",  # Santiago
    "chinaeast": "CN",  # Shanghai (Azure operated by 21Vianet)
    "chinaeast2": "CN",
    "chinaeast3": "CN",
    "chinanorth": "CN",  # Beijing
    "chinanorth2": "CN",
    "chinanorth3": "CN",  # Hebei
    "francecentral": "FR",  # Paris
    "francesouth": "FR",  # Marseille
    "germanywestcentral": "DE",  # Frankfurt
    "germanynorth": "DE",  # Berlin
    "indonesiacentral": "ID",  # Jakarta
    "israelcentral": "IL",  # Israel
    "italynorth": "IT",  # Milan
    "japaneast": "JP",  # Tokyo, Saitama
    "japanwest": "JP",  # Osaka
    "koreacentral": "KR",  # Seoul
    "koreasouth": "KR",  # Busan
    "malaysiawest": "MY",  # Kuala Lumpur
    "mexicocentral": "MX",  # Querétaro
    "newzealandnorth": "NZ",  # Auckland
    "northeurope": "IE",  # Ireland
    "westeurope": "NL",  # Netherlands
    "norwayeast": "NO",  # Oslo
    "norwaywest": "NO",  # Stavanger
    "polandcentral": "PL",  # Warsaw
    "qatarcentral": "QA",  # Doha
    "southafricanorth": "ZA",  # Johannesburg
    "southafricawest": "ZA",  # Cape Town
    "spaincentral": "ES",  # Madrid
    "swedencentral": "SE",  # Gävle
    "swedensouth": "SE",  # Staffanstorp
    "switzerlandnorth": "CH",  # Zurich
    "switzerlandwest": "CH",  # Geneva
    "uaecentral": "AE",  # Abu Dhabi
    "uaenorth": "AE",  # Dubai
    "uksouth": "GB",  # London
    "ukwest": "GB",  # Cardiff
    "centralus": "US",  # Iowa
    "centraluseuap": "US",
    "eastus": "US",  # Virginia
    "eastus2": "US",  # Virginia
    "eastus2euap": "US",
    "eastus3": "US",  # Atlanta
    "northcentralus": "US",  # Illinois
    "southcentralus": "US",  # Texas
    "westcentralus": "US",  # Wyoming
    "westus": "US",  # California
    "westus2": "US",  # Washington
    "westus3": "US",  # Arizona
    "usgovarizona": "US",
    "usgovtexas": "US",
    "usgovvirginia": "US",
    "usdodcentral": "US",
    "usdodeast": "US",
}

CLOUD_REGIONS: Final[Mapping[str, Mapping[str, str]]] = {
    "aws": _AWS,
    "gcp": _GCP,
    "azure": _AZURE,
}


def region_territory(provider: str, region: str | None) -> str | None:
    """The territory (ISO 3166-1 or 3166-2 code) a provider's cloud region is in, or None."""
    if not region:
        return None
    table = CLOUD_REGIONS.get(provider)
    if table is None:
        return None
    return table.get(region.strip().lower())
