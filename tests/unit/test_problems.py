from shared.problems import field_problems


def test_locations_are_readable_and_drop_the_union_tag() -> None:
    problems = field_problems(
        [
            {
                "loc": ("body", "batch", "items", 3, "kind"),
                "msg": "Input should be 'likes'",
                "type": "enum",
            },
            {"loc": ("body", "single", "name"), "msg": "Field required", "type": "missing"},
            {"loc": ("body",), "msg": "bad", "type": "x"},
        ]
    )
    assert [(p.field, p.pointer, p.message) for p in problems] == [
        ("items[3].kind", "#/items/3/kind", "Input should be 'likes'"),
        ("name", "#/name", "is required"),
        ("", "#", "bad"),
    ]
