"""Stripe's money rules: currency codes, minor units and the amounts Stripe accepts.

Every amount sent to Stripe is an integer in the currency's minor unit. The exponent of that
unit comes from Stripe's own table, which differs from ISO 4217 for ISK (two decimal places
in Stripe's API) and MGA (zero). Source: https://docs.stripe.com/currencies
"""

from __future__ import annotations

from decimal import Decimal
from types import MappingProxyType
from typing import Final

from paystream.errors import MoneyError as MoneyError  # re-exported: callers raise it via money

ZERO_DECIMAL_CURRENCIES: Final = frozenset({
    "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga",
    "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf",
})  # fmt: skip

# Stripe accepts these for PaymentIntents, Refunds and Disputes only when the last digit of
# the amount is 0, so 5.124 KWD has to be rounded to 5120 or 5130 before it is sent.
THREE_DECIMAL_CURRENCIES: Final = frozenset({"bhd", "jod", "kwd", "omr", "tnd"})

# NOTE: compiled from older copies of Stripe's presentment list and not checked against the
# live page. A currency Stripe added later is rejected here until someone lists it.
TWO_DECIMAL_CURRENCIES: Final = frozenset({
    "aed", "afn", "all", "amd", "ang", "aoa", "ars", "aud", "awg", "azn",
    "bam", "bbd", "bdt", "bgn", "bmd", "bnd", "bob", "brl", "bsd", "bwp",
    "byn", "bzd", "cad", "cdf", "chf", "cny", "cop", "crc", "cve", "czk",
    "dkk", "dop", "dzd", "egp", "etb", "eur", "fjd", "fkp", "gbp", "gel",
    "gip", "gmd", "gtq", "gyd", "hkd", "hnl", "htg", "huf", "idr", "ils",
    "inr", "isk", "jmd", "kes", "kgs", "khr", "kyd", "kzt", "lak", "lbp",
    "lkr", "lrd", "lsl", "mad", "mdl", "mkd", "mmk", "mnt", "mop", "mur",
    "mvr", "mwk", "mxn", "myr", "mzn", "nad", "ngn", "nio", "nok", "npr",
    "nzd", "pab", "pen", "pgk", "php", "pkr", "pln", "qar", "ron", "rsd",
    "rub", "sar", "sbd", "scr", "sek", "sgd", "shp", "sle", "sos", "srd",
    "std", "szl", "thb", "tjs", "top", "try", "ttd", "twd", "tzs", "uah",
    "usd", "uyu", "uzs", "wst", "xcd", "yer", "zar", "zmw",
})  # fmt: skip

STRIPE_CURRENCIES: Final = (
    TWO_DECIMAL_CURRENCIES | ZERO_DECIMAL_CURRENCIES | THREE_DECIMAL_CURRENCIES
)

# Stripe documents a maximum of eight digits in minor units, such as 999999.99 USD.
MAX_AMOUNT: Final = 99_999_999

# Stripe publishes these minimums per settlement currency, so checking them against the
# presentment currency is exact only when an account settles in the currency it charges.
MIN_CHARGE_AMOUNTS: Final = MappingProxyType(
    {
        "usd": 50, "eur": 50, "gbp": 30, "jpy": 50, "cad": 50, "aud": 50,
        "chf": 50, "sek": 300, "nok": 300, "dkk": 250, "pln": 200, "czk": 1500,
        "huf": 17500, "hkd": 400, "nzd": 50, "sgd": 50, "mxn": 1000, "brl": 50,
        "inr": 50, "aed": 200, "thb": 1000, "myr": 200, "ron": 200, "bgn": 100,
    }
)  # fmt: skip

# NOTE: Stripe publishes no minimum for the other currencies, because the real minimum is
# the settlement currency's minimum after conversion. Charges below it pass this check and
# are then rejected by Stripe.
DEFAULT_MIN_CHARGE_AMOUNT: Final = 1

# Since 2023-04-14 Stripe takes ISK charges only in whole krónur, although the API still
# counts ISK in hundredths.
ISK_CHARGE_MULTIPLE: Final = 100


def normalize_currency(currency: str) -> str:
    """Lowercase an ISO 4217 code and check that Stripe can charge in that currency.

    Raises MoneyError for anything other than three ASCII letters naming a Stripe
    presentment currency.
    """
    if not isinstance(currency, str):
        raise MoneyError(
            f"currency {currency!r} must be a three-letter ISO 4217 code, "
            f"not {type(currency).__name__}."
        )
    if len(currency) != 3 or not currency.isascii() or not currency.isalpha():
        raise MoneyError(f"currency {currency!r} is not a three-letter ISO 4217 code.")

    code = currency.lower()
    if code not in STRIPE_CURRENCIES:
        raise MoneyError(f"currency {currency!r} is not a currency Stripe can charge in.")
    return code


def minor_unit_exponent(currency: str) -> int:
    """Return the number of decimal places Stripe's API uses for the currency.

    ISK, HUF and TWD count as two-decimal here even though Stripe charges ISK only in whole
    krónur and pays out HUF and TWD only in whole units.
    """
    # NOTE: Stripe's page lists UGX both as zero-decimal and under special cases. Only the
    # zero-decimal rule is applied here, because the special-case rule was not verified.
    code = normalize_currency(currency)
    if code in ZERO_DECIMAL_CURRENCIES:
        return 0
    if code in THREE_DECIMAL_CURRENCIES:
        return 3
    return 2


def to_minor_units(price: Decimal, currency: str) -> int:
    """Convert a price in major units to the exact integer amount Stripe expects.

    Raises MoneyError when the price is not a finite positive Decimal, has more decimal
    places than the currency allows, or converts to an amount Stripe would not charge.
    """
    code = normalize_currency(currency)
    label = code.upper()
    if not isinstance(price, Decimal):
        raise MoneyError(f"price {price!r} must be a Decimal, not {type(price).__name__}.")
    _, digits, price_exponent = price.as_tuple()
    # NaN, sNaN and Infinity carry a letter in place of the integer exponent.
    if not isinstance(price_exponent, int):
        raise MoneyError(f"price {price} {label} is not a finite number.")
    if price <= 0:
        raise MoneyError(f"price {price} {label} must be greater than zero.")

    # Comparing before converting keeps a huge exponent such as 1E+999999 from building a
    # huge integer. Decimal comparison is exact whatever the context precision.
    max_price = from_minor_units(MAX_AMOUNT, code)
    if price > max_price:
        raise MoneyError(
            f"price {price} {label} exceeds Stripe's maximum charge of {max_price} {label}."
        )

    places = minor_unit_exponent(code)
    amount = _shift_to_integer(digits, price_exponent + places)
    if amount is None:
        raise MoneyError(
            f"price {price} {label} has more decimal places than the {places} that {label} allows."
        )

    check_charge_amount(amount, code)
    return amount


def _shift_to_integer(digits: tuple[int, ...], shift: int) -> int | None:
    """Multiply the coefficient by 10**shift, or return None if that leaves a fraction.

    Works on the digits themselves so that no Decimal context precision can round them.
    """
    coefficient = int("".join(str(digit) for digit in digits))
    if shift >= 0:
        scale: int = 10**shift
        return coefficient * scale

    # A coefficient with fewer digits than the shift is smaller than the divisor, so it
    # cannot divide evenly. Checking this first avoids computing 10**999999 for 1E-999999.
    if -shift > len(digits):
        return None
    divisor: int = 10**-shift
    amount, remainder = divmod(coefficient, divisor)
    if remainder:
        return None
    return amount


def from_minor_units(amount: int, currency: str) -> Decimal:
    """Convert an integer amount in minor units to a Decimal price in major units.

    The result carries exactly the currency's decimal places, so 1999 USD gives 19.99 and
    5120 KWD gives 5.120. Any int is accepted, including zero and negatives.
    """
    _require_int(amount)
    exponent = minor_unit_exponent(currency)
    sign, digits, _ = Decimal(amount).as_tuple()
    return Decimal((sign, digits, -exponent))


def format_amount(amount: int, currency: str) -> str:
    """Format an amount in minor units for messages, such as "19.99 USD" for 1999 usd."""
    price = from_minor_units(amount, currency)
    return f"{price:f} {normalize_currency(currency).upper()}"


def check_charge_amount(amount: int, currency: str) -> None:
    """Raise MoneyError unless Stripe accepts the amount for a charge in the currency.

    Checks that the amount is a positive int of at most eight digits, that three-decimal
    amounts end in 0, that ISK amounts are whole krónur, and that the amount reaches
    Stripe's minimum charge for the currency.
    """
    code = normalize_currency(currency)
    _check_common_rules(amount, code)

    if code == "isk" and amount % ISK_CHARGE_MULTIPLE != 0:
        raise MoneyError(
            f"amount {amount} ({format_amount(amount, code)}) is not a multiple of "
            f"{ISK_CHARGE_MULTIPLE}, which Stripe requires for ISK charges."
        )

    minimum = MIN_CHARGE_AMOUNTS.get(code, DEFAULT_MIN_CHARGE_AMOUNT)
    if amount < minimum:
        raise MoneyError(
            f"amount {amount} ({format_amount(amount, code)}) is below Stripe's minimum "
            f"charge of {minimum} ({format_amount(minimum, code)})."
        )


def check_refund_amount(amount: int, currency: str) -> None:
    """Raise MoneyError unless Stripe accepts the amount for a refund in the currency.

    Refunds have no minimum and no ISK whole-króna rule, because a refund of an older
    fractional ISK charge has to be a rounded-down partial amount.
    """
    code = normalize_currency(currency)
    _check_common_rules(amount, code)


def _check_common_rules(amount: int, code: str) -> None:
    """Apply the rules that charges and refunds share to an already normalized code."""
    _require_int(amount)
    if amount <= 0:
        raise MoneyError(f"amount {amount} must be a positive integer.")
    if amount > MAX_AMOUNT:
        raise MoneyError(
            f"amount {amount} ({format_amount(amount, code)}) exceeds Stripe's maximum of "
            f"{MAX_AMOUNT} minor units."
        )
    if code in THREE_DECIMAL_CURRENCIES and amount % 10 != 0:
        raise MoneyError(
            f"amount {amount} ({format_amount(amount, code)}) does not end in 0, which "
            f"Stripe requires for three-decimal currencies."
        )


def _require_int(amount: int) -> None:
    # bool is a subclass of int, so True would otherwise pass as an amount of 1.
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise MoneyError(f"amount {amount!r} must be an int, not {type(amount).__name__}.")
