"""Sign-in throttling per username and client address: a lockout with a clear message."""

import pytest


@pytest.fixture(autouse=True)
def limits(settings):
    settings.REVERIE_LOGIN_MAX_FAILURES = 3
    settings.REVERIE_LOGIN_LOCKOUT_SECONDS = 600


def sign_in(client, username, password, address="203.0.113.7"):
    return client.post("/login/", {"username": username, "password": password}, REMOTE_ADDR=address)


def test_repeated_wrong_passwords_lock_out_that_username_from_that_address(client, owner):
    owner.set_password("right-password")
    owner.save()

    tries = [sign_in(client, "olive-owner", "wrong") for _ in range(3)]
    with_the_right_password = sign_in(client, "olive-owner", "right-password")

    assert [t.status_code for t in tries[:2]] == [200, 200]
    assert "match. Please try again" in tries[0].content.decode()
    assert tries[2].status_code == 429
    assert with_the_right_password.status_code == 429
    page = with_the_right_password.content.decode()
    assert "Too many failed sign-ins for this username from your address" in page
    assert "locked for 10 more minutes" in page
    assert 540 <= int(with_the_right_password["Retry-After"]) <= 600
    assert "_auth_user_id" not in client.session


def test_other_addresses_and_usernames_are_not_locked_out(client, owner, reviewer):
    for user in (owner, reviewer):
        user.set_password("right-password")
        user.save()
    for _ in range(3):
        sign_in(client, "olive-owner", "wrong")

    from_elsewhere = sign_in(client, "olive-owner", "right-password", address="198.51.100.2")
    client.logout()
    colleague = sign_in(client, "riley-reviewer", "right-password")

    assert from_elsewhere.status_code == 302
    assert colleague.status_code == 302


def test_a_successful_sign_in_resets_the_count(client, owner):
    owner.set_password("right-password")
    owner.save()
    for _ in range(2):
        sign_in(client, "olive-owner", "wrong")
    assert sign_in(client, "olive-owner", "right-password").status_code == 302
    client.logout()

    after = [sign_in(client, "olive-owner", "wrong").status_code for _ in range(2)]

    assert after == [200, 200]


def test_the_admin_sign_in_is_throttled_too(client, owner):
    owner.is_staff = True
    owner.set_password("right-password")
    owner.save()
    for _ in range(3):
        client.post(
            "/admin/login/",
            {"username": "olive-owner", "password": "wrong"},
            REMOTE_ADDR="203.0.113.7",
        )

    page = client.post(
        "/admin/login/",
        {"username": "olive-owner", "password": "right-password"},
        REMOTE_ADDR="203.0.113.7",
    )

    assert "Too many failed sign-ins" in page.content.decode()
    assert "_auth_user_id" not in client.session
