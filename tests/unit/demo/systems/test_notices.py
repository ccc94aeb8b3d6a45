"""The demo notices system: planned outages filtered by region."""

from __future__ import annotations

import httpx
import pytest

from gridgate.demo.data import DemoData
from tests.unit.demo.systems.helpers import assert_problem

OUTAGES = "/api/v1/notices/outages"


async def test_without_a_region_every_outage_is_listed_newest_first(
    notices: httpx.AsyncClient, data: DemoData
) -> None:
    body = (await notices.get(OUTAGES, params={"page_size": 200})).json()
    assert body["total"] == len(data.outages)
    assert (body["page"], body["page_size"]) == (1, 200)
    starts = [item["start"] for item in body["items"]]
    assert starts == sorted(starts, reverse=True)
    assert set(body["items"][0]) == {
        "outage_id",
        "region",
        "start",
        "end",
        "reason",
        "affected_area",
    }


async def test_a_district_lists_its_own_outages_only(
    notices: httpx.AsyncClient, data: DemoData
) -> None:
    body = (await notices.get(OUTAGES, params={"region": "西湖区"})).json()
    expected = [o.outage_id for o in data.outages if o.region == "浙江省/杭州市/西湖区"]
    assert expected
    assert sorted(item["outage_id"] for item in body["items"]) == sorted(expected)
    assert body["total"] == len(expected)


@pytest.mark.parametrize("region", ["西湖", "浙江省/杭州市/西湖区", " 西湖区 "])
async def test_a_region_may_be_a_prefix_or_a_path(notices: httpx.AsyncClient, region: str) -> None:
    body = (await notices.get(OUTAGES, params={"region": region})).json()
    assert body["total"] > 0
    assert all(item["region"] == "浙江省/杭州市/西湖区" for item in body["items"])


async def test_a_city_lists_the_outages_of_all_its_districts(notices: httpx.AsyncClient) -> None:
    body = (await notices.get(OUTAGES, params={"region": "杭州市", "page_size": 200})).json()
    regions = {item["region"] for item in body["items"]}
    assert len(regions) > 1
    assert all(region.startswith("浙江省/杭州市/") for region in regions)


async def test_a_region_without_outages_gives_an_empty_list(notices: httpx.AsyncClient) -> None:
    body = (await notices.get(OUTAGES, params={"region": "舟山市"})).json()
    assert body == {"items": [], "total": 0, "page": 1, "page_size": 20}


async def test_outages_can_be_paged(notices: httpx.AsyncClient, data: DemoData) -> None:
    body = (await notices.get(OUTAGES, params={"page": 2, "page_size": 3})).json()
    assert len(body["items"]) == 3
    assert body["total"] == len(data.outages)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"page_size": "0"}, "page_size"),
        ({"page": "-1"}, "page"),
        ({"region": "区" * 65}, "region"),
    ],
)
async def test_bad_parameters_are_invalid(
    notices: httpx.AsyncClient, params: dict[str, str], field: str
) -> None:
    body = assert_problem(await notices.get(OUTAGES, params=params), 422, "request.invalid")
    assert body["field"] == field
