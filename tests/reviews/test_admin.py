"""The admin shows webhook deliveries read-only: changes go through the services."""

import pytest

pytestmark = pytest.mark.django_db


def test_webhook_deliveries_page_renders(admin_client):
    assert admin_client.get("/admin/reviews/webhookdelivery/").status_code == 200
