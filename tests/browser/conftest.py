"""Playwright (sync API) driving Debian's Chromium against pytest-django's live_server."""

import os
from pathlib import Path
from typing import Any

import pytest

# Playwright's sync API runs an event loop in this thread; Django's async-safety check would
# otherwise refuse ORM calls made by fixtures while it is running.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = os.environ.get("REVERIE_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(__file__).parent / "screenshots"


def pytest_collection_modifyitems(items: list[Any]) -> None:
    for item in items:
        if "tests/browser" in str(item.fspath):
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def browser() -> Any:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"No Chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any, transactional_db: Any) -> Any:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield page
    context.close()


@pytest.fixture
def login(page: Any, live_server: Any) -> Any:
    def _login(username: str, password: str = "pw-for-tests") -> Any:  # noqa: S107
        page.goto(live_server.url + "/login/")
        page.fill("input[name=username]", username)
        page.fill("input[name=password]", password)
        page.click("button[type=submit]")
        page.wait_for_url(live_server.url + "/")
        return page

    return _login


@pytest.fixture
def shot(page: Any) -> Any:
    SCREENSHOTS.mkdir(exist_ok=True)

    def _shot(name: str, *, full_page: bool = True) -> None:
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=full_page)

    return _shot
