from shared.api_keys import ApiKeyring, bearer_token


def test_keys_authenticate_by_name() -> None:
    ring = ApiKeyring({"crm": "crm-secret-0123456789", "forms": "forms-secret-0123456789"})
    assert ring.authenticate("crm-secret-0123456789") == "crm"
    assert ring.authenticate("forms-secret-0123456789") == "forms"
    assert ring.authenticate("crm-secret-012345678") is None
    assert ring.authenticate("") is None


def test_only_digests_are_kept() -> None:
    ring = ApiKeyring({"crm": "crm-secret-0123456789"})
    assert "crm-secret" not in repr(vars(ring))


def test_bearer_token_parsing() -> None:
    def scope(value: bytes) -> dict[str, object]:
        return {"headers": [(b"authorization", value)]}

    assert bearer_token(scope(b"Bearer abc")) == "abc"
    assert bearer_token(scope(b"bearer   abc  ")) == "abc"
    assert bearer_token(scope(b"Basic abc")) is None
    assert bearer_token(scope(b"Bearer ")) is None
    assert bearer_token({"headers": []}) is None
