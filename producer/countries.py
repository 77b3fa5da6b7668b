"""Country names as card data writes them, mapped to ISO 3166-1 alpha-2 codes.

Codes are ISO 3166-1 alpha-2; names are the short English names. The table
covers the countries that commonly appear in
US card data, including every country name in the TabFormer User 0 slice.
"""

from __future__ import annotations

# NOTE: not the full ISO list; a name missing here leaves merchant_country
# empty and the reader warns once per name.
COUNTRY_CODES = {
    "argentina": "AR", "australia": "AU", "austria": "AT", "bahamas": "BS",
    "barbados": "BB", "belgium": "BE", "belize": "BZ", "bermuda": "BM",
    "brazil": "BR", "canada": "CA", "chile": "CL", "china": "CN",
    "colombia": "CO", "costa rica": "CR", "croatia": "HR", "czech republic": "CZ",
    "denmark": "DK", "dominican republic": "DO", "ecuador": "EC", "egypt": "EG",
    "el salvador": "SV", "estonia": "EE", "finland": "FI", "france": "FR",
    "germany": "DE", "greece": "GR", "guatemala": "GT", "haiti": "HT",
    "honduras": "HN", "hong kong": "HK", "hungary": "HU", "iceland": "IS",
    "india": "IN", "indonesia": "ID", "ireland": "IE", "israel": "IL",
    "italy": "IT", "jamaica": "JM", "japan": "JP", "kenya": "KE",
    "luxembourg": "LU", "malaysia": "MY", "mexico": "MX", "morocco": "MA",
    "netherlands": "NL", "new zealand": "NZ", "nicaragua": "NI", "nigeria": "NG",
    "norway": "NO", "pakistan": "PK", "panama": "PA", "peru": "PE",
    "philippines": "PH", "poland": "PL", "portugal": "PT", "qatar": "QA",
    "romania": "RO", "russia": "RU", "saudi arabia": "SA", "singapore": "SG",
    "south africa": "ZA", "south korea": "KR", "spain": "ES", "sweden": "SE",
    "switzerland": "CH", "taiwan": "TW", "thailand": "TH", "trinidad and tobago": "TT",
    "turkey": "TR", "united arab emirates": "AE", "united kingdom": "GB",
    "uruguay": "UY", "venezuela": "VE", "vietnam": "VN",
}

# The USPS two-letter codes of the 50 states, DC and the armed-forces mail
# regions, which US card data writes in place of a country for US merchants.
US_STATE_CODES = frozenset(
    "AL AK AZ AR CA CO CT DE FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO "
    "MT NE NV NH NJ NM NY NC ND OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY "
    "DC AA AE AP".split()
)
