"""What an order's body may hold is exactly what its OpenAPI schema says."""

import re
from decimal import Decimal

import pytest
from pydantic import ValidationError

from order_service.entrypoints.http import IF_MATCH_PATTERN
from order_service.entrypoints.schemas import PRICE_PATTERN, ItemIn, OrderCreate


def item(**changes: object) -> dict[str, object]:
    return {"sku": "A-1", "quantity": 1, "unit_price": "12.50"} | changes


@pytest.mark.parametrize("price", ["0", "12.5", "12.50", "999999.99", "1000000", "1000000.00", 0, 12.5, 1000000])
def test_prices_the_schema_allows_are_taken(price):
    assert ItemIn.model_validate(item(unit_price=price)).unit_price == Decimal(str(price))


@pytest.mark.parametrize(
    "price", ["", " 5", "1e3", "+5", "05", "5.", ".5", "12.505", "1000000.01", "-1", True, 12.505, -1, 1000000.5]
)
def test_prices_the_schema_refuses_are_refused(price):
    with pytest.raises(ValidationError):
        ItemIn.model_validate(item(unit_price=price))


@pytest.mark.parametrize("quantity", ["5", 5.5, True, 0, 10_001])
def test_a_quantity_is_an_integer_from_1_to_10000(quantity):
    with pytest.raises(ValidationError):
        ItemIn.model_validate(item(quantity=quantity))


def test_the_documented_schema_is_the_one_enforced():
    price = OrderCreate.model_json_schema()["$defs"]["ItemIn"]["properties"]["unit_price"]
    assert {"type": "string", "pattern": PRICE_PATTERN} in price["anyOf"]
    assert re.fullmatch(PRICE_PATTERN, "12.50")


@pytest.mark.parametrize(
    ("value", "valid"), [('"3"', True), ('W/"3"', True), ("3", True), ("*", True), ("null", False)]
)
def test_if_match_takes_an_etag_or_a_star(value, valid):
    assert bool(re.fullmatch(IF_MATCH_PATTERN, value)) is valid
