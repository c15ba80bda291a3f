"""The matcher's HTTP API (on ROAC_MATCHER_PORT, API key required): the one router the app and
the OpenAPI generator mount, made of the routes cut by what they serve:

- `pool_routes.py`: pools, rounds and feedback on their introductions (`Rounds`, `Feedback`);
- `resource_routes.py`: resources brought to the people most interested (`Resources`);
- `contact_routes.py`: a person's identities and merges (`ContactIdentities`);
- `directory_routes.py`: the operators' read-only lists, for the console (`Directory`).

Here only what they share: the /v1 prefix, the tag and the problem answers. They are included
in this order, which is the order of the paths in docs/openapi/matcher.json; and a route with
`{external_id:person_id}` must come after those under it (directory_routes.py's last route takes
any suffix). The operators' unmerge is a router of its own (operator_routes.py).
"""

from __future__ import annotations

from fastapi import APIRouter

from services.matcher import contact_routes, directory_routes, pool_routes, resource_routes
from shared.problems import AUTH_PROBLEMS, BODY_PROBLEMS, problem_responses

api = APIRouter(
    prefix="/v1",
    tags=["pools and rounds"],
    responses=problem_responses(
        {
            **AUTH_PROBLEMS,
            **BODY_PROBLEMS,
            404: "No such pool, round, introduction, resource or person",
        }
    ),
)
for part in (pool_routes, resource_routes, contact_routes, directory_routes):
    api.include_router(part.router)
