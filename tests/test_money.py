from __future__ import annotations

from decimal import Decimal

import pytest

from paystream.errors import MoneyError
from paystream.money import (
    MAX_AMOUNT,
    MIN_CHARGE_AMOUNTS,
    STRIPE_CURRENCIES,
    THREE_DECIMAL_CURRENCIES,
    ZERO_DECIMAL_CURRENCIES,
    check_charge_amount,
    check_refund_amount,
    format_amount,
    from_minor_units,
    minor_unit_exponent,
    normalize_currency,
    to_minor_units,
)

# normalize_currency


def test_normalize_currency_lowercases_uppercase_code() -> None:
    assert normalize_currency("USD") == "usd"
    assert normalize_currency("Jpy") == "jpy"


def test_normalize_currency_keeps_lowercase_code() -> None:
    assert normalize_currency("eur") == "eur"


def test_normalize_currency_accepts_every_listed_currency() -> None:
    for code in sorted(STRIPE_CURRENCIES):
        assert normalize_currency(code.upper()) == code


def test_normalize_currency_lists_required_currencies() -> None:
    required = [
        "usd", "eur", "gbp", "jpy", "cad", "aud", "chf", "sek", "nok", "dkk",
        "pln", "czk", "huf", "isk", "krw", "inr", "brl", "mxn", "sgd", "hkd",
        "nzd", "zar", "try", "ils", "aed", "thb", "myr", "php", "idr", "twd",
        "vnd", "clp", "kwd", "bhd", "jod", "omr", "tnd", "ugx", "xof", "xaf",
        "xpf", "bif", "djf", "gnf", "kmf", "mga", "pyg", "rwf", "vuv", "ron", "bgn",
    ]  # fmt: skip
    for code in required:
        assert code in STRIPE_CURRENCIES, code


def test_normalize_currency_unknown_code_is_rejected() -> None:
    with pytest.raises(MoneyError) as excinfo:
        normalize_currency("XYZ")

    assert str(excinfo.value) == "currency 'XYZ' is not a currency Stripe can charge in."
    assert excinfo.value.extensions == {"code": "BAD_USER_INPUT"}


@pytest.mark.parametrize("currency", ["", "us", "usdd", "u5d", " usd", "US$", "ÜSD", "€€€"])
def test_normalize_currency_malformed_code_is_rejected(currency: str) -> None:
    with pytest.raises(MoneyError) as excinfo:
        normalize_currency(currency)

    assert str(excinfo.value) == f"currency {currency!r} is not a three-letter ISO 4217 code."


def test_normalize_currency_non_string_is_rejected() -> None:
    with pytest.raises(MoneyError) as excinfo:
        normalize_currency(840)  # type: ignore[arg-type]  # callers outside mypy can pass this

    assert str(excinfo.value) == "currency 840 must be a three-letter ISO 4217 code, not int."


# minor_unit_exponent


def test_minor_unit_exponent_two_decimal() -> None:
    assert minor_unit_exponent("usd") == 2
    assert minor_unit_exponent("eur") == 2
    assert minor_unit_exponent("gbp") == 2


def test_minor_unit_exponent_zero_decimal() -> None:
    expected = {
        "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga",
        "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf",
    }  # fmt: skip

    assert ZERO_DECIMAL_CURRENCIES == expected
    for code in sorted(expected):
        assert minor_unit_exponent(code) == 0, code


def test_minor_unit_exponent_three_decimal() -> None:
    expected = {"bhd", "jod", "kwd", "omr", "tnd"}

    assert THREE_DECIMAL_CURRENCIES == expected
    for code in sorted(expected):
        assert minor_unit_exponent(code) == 3, code


def test_minor_unit_exponent_special_cases_are_two_decimal() -> None:
    assert minor_unit_exponent("isk") == 2
    assert minor_unit_exponent("huf") == 2
    assert minor_unit_exponent("twd") == 2


def test_minor_unit_exponent_accepts_uppercase() -> None:
    assert minor_unit_exponent("JPY") == 0
    assert minor_unit_exponent("KWD") == 3


# to_minor_units


def test_to_minor_units_two_decimal_is_exact() -> None:
    assert to_minor_units(Decimal("19.99"), "usd") == 1999
    assert to_minor_units(Decimal("123456.78"), "usd") == 12345678
    assert to_minor_units(Decimal("999999.99"), "usd") == 99999999


def test_to_minor_units_small_two_decimal_is_exact() -> None:
    # 0.07 is below the USD minimum, so a currency without a listed minimum is used.
    assert to_minor_units(Decimal("0.07"), "php") == 7


def test_to_minor_units_whole_and_trailing_zero_prices() -> None:
    assert to_minor_units(Decimal(20), "usd") == 2000
    assert to_minor_units(Decimal("19.990"), "usd") == 1999
    assert to_minor_units(Decimal("5E+1"), "usd") == 5000


def test_to_minor_units_zero_decimal() -> None:
    assert to_minor_units(Decimal(500), "jpy") == 500
    assert to_minor_units(Decimal("500.00"), "jpy") == 500
    assert to_minor_units(Decimal(15000), "krw") == 15000


def test_to_minor_units_three_decimal_ending_in_zero() -> None:
    assert to_minor_units(Decimal("5.120"), "kwd") == 5120
    assert to_minor_units(Decimal("5.12"), "kwd") == 5120
    assert to_minor_units(Decimal(1), "bhd") == 1000


def test_to_minor_units_kwd_last_digit_rejected() -> None:
    with pytest.raises(MoneyError) as excinfo:
        to_minor_units(Decimal("5.125"), "kwd")

    assert str(excinfo.value) == (
        "amount 5125 (5.125 KWD) does not end in 0, which Stripe requires for "
        "three-decimal currencies."
    )


def test_to_minor_units_isk_whole_kronur() -> None:
    assert to_minor_units(Decimal(500), "isk") == 50000
    assert to_minor_units(Decimal("500.00"), "isk") == 50000


def test_to_minor_units_isk_fraction_is_rejected() -> None:
    with pytest.raises(MoneyError) as excinfo:
        to_minor_units(Decimal("500.50"), "isk")

    assert str(excinfo.value) == (
        "amount 50050 (500.50 ISK) is not a multiple of 100, which Stripe requires for ISK charges."
    )


def test_to_minor_units_uppercase_currency() -> None:
    assert to_minor_units(Decimal("19.99"), "USD") == 1999


def test_to_minor_units_usd_extra_digit_rejected() -> None:
    with pytest.raises(MoneyError) as excinfo:
        to_minor_units(Decimal("19.999"), "usd")

    assert str(excinfo.value) == (
        "price 19.999 USD has more decimal places than the 2 that USD allows."
    )


def test_to_minor_units_zero_decimal_fraction_is_rejected() -> None:
    with pytest.raises(MoneyError) as excinfo:
        to_minor_units(Decimal("1.5"), "jpy")

    assert str(excinfo.value) == "price 1.5 JPY has more decimal places than the 0 that JPY allows."


def test_to_minor_units_kwd_extra_digit_rejected() -> None:
    with pytest.raises(MoneyError, match="more decimal places than the 3 that KWD allows"):
        to_minor_units(Decimal("5.1201"), "kwd")


def test_to_minor_units_tiny_exponent_is_rejected() -> None:
    with pytest.raises(MoneyError, match="more decimal places"):
        to_minor_units(Decimal("1E-999999"), "usd")


@pytest.mark.parametrize("price", ["0", "-0", "0.00", "-19.99"])
def test_to_minor_units_non_positive_is_rejected(price: str) -> None:
    with pytest.raises(MoneyError) as excinfo:
        to_minor_units(Decimal(price), "usd")

    assert str(excinfo.value) == f"price {price} USD must be greater than zero."


@pytest.mark.parametrize("price", ["NaN", "sNaN", "Infinity", "-Infinity"])
def test_to_minor_units_non_finite_is_rejected(price: str) -> None:
    with pytest.raises(MoneyError) as excinfo:
        to_minor_units(Decimal(price), "usd")

    assert str(excinfo.value) == f"price {price} USD is not a finite number."


def test_to_minor_units_float_is_rejected() -> None:
    with pytest.raises(MoneyError) as excinfo:
        to_minor_units(19.99, "usd")  # type: ignore[arg-type]  # callers outside mypy can pass this

    assert str(excinfo.value) == "price 19.99 must be a Decimal, not float."


def test_to_minor_units_int_is_rejected() -> None:
    with pytest.raises(MoneyError, match="must be a Decimal, not int"):
        to_minor_units(500, "jpy")  # type: ignore[arg-type]  # callers outside mypy can pass this


def test_to_minor_units_below_minimum_is_rejected() -> None:
    with pytest.raises(MoneyError) as excinfo:
        to_minor_units(Decimal("0.49"), "usd")

    assert str(excinfo.value) == (
        "amount 49 (0.49 USD) is below Stripe's minimum charge of 50 (0.50 USD)."
    )


def test_to_minor_units_above_maximum_is_rejected() -> None:
    with pytest.raises(MoneyError) as excinfo:
        to_minor_units(Decimal("1000000.00"), "usd")

    assert str(excinfo.value) == (
        "price 1000000.00 USD exceeds Stripe's maximum charge of 999999.99 USD."
    )


def test_to_minor_units_nine_digit_amount_is_rejected() -> None:
    # 1234567.89 converts exactly to 123456789, which is one digit over Stripe's maximum.
    with pytest.raises(MoneyError) as excinfo:
        to_minor_units(Decimal("1234567.89"), "usd")

    assert str(excinfo.value) == (
        "price 1234567.89 USD exceeds Stripe's maximum charge of 999999.99 USD."
    )


def test_to_minor_units_huge_exponent_is_rejected() -> None:
    with pytest.raises(MoneyError, match="exceeds Stripe's maximum charge"):
        to_minor_units(Decimal("1E+999999"), "usd")


def test_to_minor_units_unknown_currency_is_rejected() -> None:
    with pytest.raises(MoneyError, match="not a currency Stripe can charge in"):
        to_minor_units(Decimal("19.99"), "abc")


def test_to_minor_units_ignores_context_precision() -> None:
    # 28 significant digits is the default context precision, and the conversion must not
    # round a longer price that still has only two decimal places after trailing zeros.
    price = Decimal("12.3400000000000000000000000000000")

    assert to_minor_units(price, "usd") == 1234


# from_minor_units


def test_from_minor_units_two_decimal() -> None:
    assert from_minor_units(1999, "usd") == Decimal("19.99")
    assert str(from_minor_units(1999, "usd")) == "19.99"
    assert str(from_minor_units(7, "usd")) == "0.07"
    assert from_minor_units(123456789, "usd") == Decimal("1234567.89")


def test_from_minor_units_zero_decimal() -> None:
    assert str(from_minor_units(500, "jpy")) == "500"


def test_from_minor_units_three_decimal_keeps_places() -> None:
    assert str(from_minor_units(5120, "kwd")) == "5.120"


def test_from_minor_units_negative_and_zero() -> None:
    assert str(from_minor_units(-1999, "usd")) == "-19.99"
    assert str(from_minor_units(0, "usd")) == "0.00"


def test_from_minor_units_round_trips() -> None:
    cases = [(1999, "usd"), (7, "php"), (12345678, "idr"), (500, "jpy"), (5120, "kwd")]
    for amount, currency in cases:
        assert to_minor_units(from_minor_units(amount, currency), currency) == amount


def test_from_minor_units_bool_is_rejected() -> None:
    with pytest.raises(MoneyError) as excinfo:
        from_minor_units(True, "usd")

    assert str(excinfo.value) == "amount True must be an int, not bool."


# format_amount


def test_format_amount_each_currency_class() -> None:
    assert format_amount(1999, "usd") == "19.99 USD"
    assert format_amount(500, "jpy") == "500 JPY"
    assert format_amount(5120, "kwd") == "5.120 KWD"
    assert format_amount(50000, "isk") == "500.00 ISK"


def test_format_amount_small_and_large() -> None:
    assert format_amount(7, "usd") == "0.07 USD"
    assert format_amount(1, "bhd") == "0.001 BHD"
    assert format_amount(100000000, "usd") == "1000000.00 USD"


def test_format_amount_uppercase_currency() -> None:
    assert format_amount(1999, "EUR") == "19.99 EUR"


# check_charge_amount


def test_check_charge_amount_accepts_valid_amounts() -> None:
    check_charge_amount(50, "usd")
    check_charge_amount(MAX_AMOUNT, "usd")
    check_charge_amount(50, "jpy")
    check_charge_amount(5120, "kwd")
    check_charge_amount(100, "isk")
    check_charge_amount(17500, "huf")
    check_charge_amount(1, "php")


def test_check_charge_amount_minimums_match_stripe() -> None:
    expected = {
        "usd": 50, "eur": 50, "gbp": 30, "jpy": 50, "cad": 50, "aud": 50,
        "chf": 50, "sek": 300, "nok": 300, "dkk": 250, "pln": 200, "czk": 1500,
        "huf": 17500, "hkd": 400, "nzd": 50, "sgd": 50, "mxn": 1000, "brl": 50,
        "inr": 50, "aed": 200, "thb": 1000, "myr": 200, "ron": 200, "bgn": 100,
    }  # fmt: skip

    assert dict(MIN_CHARGE_AMOUNTS) == expected


def test_check_charge_amount_at_each_minimum() -> None:
    for currency, minimum in MIN_CHARGE_AMOUNTS.items():
        check_charge_amount(minimum, currency)
        with pytest.raises(MoneyError, match="below Stripe's minimum charge"):
            check_charge_amount(minimum - 1, currency)


def test_check_charge_amount_below_minimum_is_rejected() -> None:
    with pytest.raises(MoneyError) as excinfo:
        check_charge_amount(29, "gbp")

    assert str(excinfo.value) == (
        "amount 29 (0.29 GBP) is below Stripe's minimum charge of 30 (0.30 GBP)."
    )


def test_check_charge_amount_zero_decimal_minimum() -> None:
    with pytest.raises(MoneyError) as excinfo:
        check_charge_amount(49, "jpy")

    assert (
        str(excinfo.value) == "amount 49 (49 JPY) is below Stripe's minimum charge of 50 (50 JPY)."
    )


def test_check_charge_amount_above_maximum_is_rejected() -> None:
    with pytest.raises(MoneyError) as excinfo:
        check_charge_amount(MAX_AMOUNT + 1, "usd")

    assert str(excinfo.value) == (
        "amount 100000000 (1000000.00 USD) exceeds Stripe's maximum of 99999999 minor units."
    )


def test_check_charge_amount_kwd_last_digit() -> None:
    with pytest.raises(MoneyError, match="does not end in 0"):
        check_charge_amount(5125, "kwd")
    with pytest.raises(MoneyError, match="does not end in 0"):
        check_charge_amount(1001, "bhd")


def test_check_charge_amount_isk_fraction_rejected() -> None:
    with pytest.raises(MoneyError) as excinfo:
        check_charge_amount(150, "isk")

    assert str(excinfo.value) == (
        "amount 150 (1.50 ISK) is not a multiple of 100, which Stripe requires for ISK charges."
    )


def test_check_charge_amount_isk_below_krona() -> None:
    with pytest.raises(MoneyError, match="not a multiple of 100"):
        check_charge_amount(50, "isk")


@pytest.mark.parametrize("amount", [0, -1, -1999])
def test_check_charge_amount_non_positive_is_rejected(amount: int) -> None:
    with pytest.raises(MoneyError) as excinfo:
        check_charge_amount(amount, "usd")

    assert str(excinfo.value) == f"amount {amount} must be a positive integer."


@pytest.mark.parametrize("amount", [True, False])
def test_check_charge_amount_bool_is_rejected(amount: bool) -> None:
    with pytest.raises(MoneyError) as excinfo:
        check_charge_amount(amount, "php")

    assert str(excinfo.value) == f"amount {amount} must be an int, not bool."


@pytest.mark.parametrize(
    ("amount", "type_name"),
    [(Decimal(1999), "Decimal"), (1999.0, "float"), ("1999", "str"), (None, "NoneType")],
)
def test_check_charge_amount_non_int_is_rejected(amount: object, type_name: str) -> None:
    with pytest.raises(MoneyError) as excinfo:
        check_charge_amount(amount, "usd")  # type: ignore[arg-type]  # rejected at runtime

    assert str(excinfo.value) == f"amount {amount!r} must be an int, not {type_name}."


def test_check_charge_amount_unknown_currency_is_rejected() -> None:
    with pytest.raises(MoneyError, match="'zzz' is not a currency Stripe can charge in"):
        check_charge_amount(1999, "zzz")


def test_check_charge_amount_uppercase_currency() -> None:
    check_charge_amount(1999, "USD")
    with pytest.raises(MoneyError, match="0.49 USD"):
        check_charge_amount(49, "USD")


# check_refund_amount


def test_check_refund_amount_has_no_minimum() -> None:
    check_refund_amount(1, "usd")
    check_refund_amount(1, "jpy")


def test_check_refund_amount_isk_fraction_is_accepted() -> None:
    check_refund_amount(150, "isk")


def test_check_refund_amount_kwd_last_digit() -> None:
    check_refund_amount(10, "kwd")
    with pytest.raises(MoneyError) as excinfo:
        check_refund_amount(5125, "kwd")

    assert str(excinfo.value) == (
        "amount 5125 (5.125 KWD) does not end in 0, which Stripe requires for "
        "three-decimal currencies."
    )


def test_check_refund_amount_above_maximum_is_rejected() -> None:
    check_refund_amount(MAX_AMOUNT, "usd")
    with pytest.raises(MoneyError, match="exceeds Stripe's maximum of 99999999 minor units"):
        check_refund_amount(MAX_AMOUNT + 1, "usd")


@pytest.mark.parametrize("amount", [0, -50])
def test_check_refund_amount_non_positive_is_rejected(amount: int) -> None:
    with pytest.raises(MoneyError) as excinfo:
        check_refund_amount(amount, "usd")

    assert str(excinfo.value) == f"amount {amount} must be a positive integer."


def test_check_refund_amount_bool_is_rejected() -> None:
    with pytest.raises(MoneyError, match="must be an int, not bool"):
        check_refund_amount(True, "usd")


def test_check_refund_amount_non_int_is_rejected() -> None:
    with pytest.raises(MoneyError, match="must be an int, not float"):
        check_refund_amount(10.0, "usd")  # type: ignore[arg-type]  # rejected at runtime
