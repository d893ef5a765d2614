"""The any-schema split of `echo.sql`, for tests only: `accounts` shared by two services.

Once `owner` is cut over, the source's writes to `profile` (still the source's: `profile` is not cut over) reach
owner_db through the forward worker, under its replication origin, while owner's reverse stream reads owner_db:
those rows must not come back.
"""

from __future__ import annotations

from splitter.topology.model import Ownership, Service, Table, Topology

TOPOLOGY = Topology(
    source_database="anyschema",
    services=(
        Service("owner", database="owner_db", tables=(
            Table("accounts", source="accounts", key=("id",), columns={"id": "id", "login": "login",
                                                                      "profile": "profile"}),
        )),
        Service("profile", database="profile_db", tables=(
            Table("accounts", source="accounts", key=("id",), columns={"id": "id", "profile": "profile"}),
        )),
    ),
    shared=(Ownership("accounts", rows="owner", columns={"owner": ("login",), "profile": ("profile",)}),),
)
